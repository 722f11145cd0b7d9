package tunnel

// queue is a FIFO over a slice that reuses its backing array. The zero value
// is an empty queue. Not safe for concurrent use.
type queue[T any] struct {
	items []T
	head  int
}

// len returns the number of queued items.
func (q *queue[T]) len() int { return len(q.items) - q.head }

// push appends v.
func (q *queue[T]) push(v T) {
	if q.head > 0 && len(q.items) == cap(q.items) && q.head >= len(q.items)/2 {
		// Move the live items to the front instead of growing.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, v)
}

// peek returns the first item without removing it; ok is false when q is
// empty.
func (q *queue[T]) peek() (v T, ok bool) {
	if q.head == len(q.items) {
		return v, false
	}
	return q.items[q.head], true
}

// pop removes and returns the first item; ok is false when q is empty.
func (q *queue[T]) pop() (v T, ok bool) {
	if q.head == len(q.items) {
		return v, false
	}
	v = q.items[q.head]
	var zero T
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items = q.items[:0]
		q.head = 0
	}
	return v, true
}

// reset empties q and returns every item to the caller through f (which may
// be nil).
func (q *queue[T]) reset(f func(T)) {
	for i := q.head; i < len(q.items); i++ {
		if f != nil {
			f(q.items[i])
		}
	}
	clear(q.items)
	q.items = q.items[:0]
	q.head = 0
}
