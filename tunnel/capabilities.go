package tunnel

import "slices"

// CapabilityDataBatches is the optional feature, announced in Hello and
// Welcome, of a peer that takes several exchange buffers of a session in one
// SessionData (its more_buffers). A Mux always takes them; it sends them
// only once UsePeerCapabilities has seen the peer announce this.
const CapabilityDataBatches = "session_data_batches"

// Capabilities returns the optional features of this Mux, for Hello and, as
// an intersection with the client's (CommonCapabilities), for Welcome.
func Capabilities() []string { return []string{CapabilityDataBatches} }

// CommonCapabilities returns the capabilities of peer that this Mux has
// too, in this Mux's order: what a Welcome announces.
func CommonCapabilities(peer []string) []string {
	var out []string
	for _, c := range Capabilities() {
		if slices.Contains(peer, c) {
			out = append(out, c)
		}
	}
	return out
}

// UsePeerCapabilities records the optional features the peer announced in
// its Hello or Welcome. From then on the writer batches the queued buffers
// of a session into one SessionData when the peer takes batches. Unknown
// names are ignored.
func (m *Mux) UsePeerCapabilities(peer []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = slices.Contains(peer, CapabilityDataBatches)
}
