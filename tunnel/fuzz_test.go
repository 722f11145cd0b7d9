package tunnel

import (
	"encoding/binary"
	"testing"

	"google.golang.org/protobuf/proto"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
)

// FuzzDispatch feeds arbitrary frame sequences from a peer to a Mux's
// dispatcher and checks that it never panics and that its invariants hold:
// no session buffers more than the window, credit never goes negative, and
// a stopped Mux keeps no session.
func FuzzDispatch(f *testing.F) {
	f.Add([]byte{0, 2, 0, 0, 1, 2, 1, 0xff, 3, 2, 0, 0})
	f.Add([]byte{0, 2, 0, 0, 1, 2, 0xff, 0xff, 1, 2, 0xff, 0xff, 1, 2, 0xff, 0xff, 1, 2, 0xff, 0xff, 1, 2, 0xff, 0xff})
	f.Add([]byte{0, 2, 0, 0, 5, 0, 0, 0, 6, 2, 0, 0, 4, 2, 0, 0})
	f.Add([]byte{7, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const window = 4096
		p, _ := newPipe(1)
		m, err := New(p, Config{Side: SideClient, Window: window, MaxBufferSize: 1024,
			Accept: func(s *Session) {
				if s.ID()%4 == 2 {
					s.Accept(nil)
				}
			},
			Control: func(*tunnelv1.Frame) {},
		})
		if err != nil {
			t.Fatal(err)
		}
		// At most 2,000 frames per input keep each run short.
		for n := 0; len(data) >= 4 && n < 2000; n++ {
			op, id := data[0], uint64(data[1])
			arg := int(binary.BigEndian.Uint16(data[2:4]))
			data = data[4:]
			var fr *tunnelv1.Frame
			switch op % 10 {
			case 0:
				fr = openFrame(id, uint32(arg)*4)
			case 1:
				fr = dataFrame(id, make([]byte, arg%1100))
			case 2:
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionWindow{SessionWindow: &tunnelv1.SessionWindow{SessionId: id, Credit: uint32(arg) << 16}}}
			case 3:
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionHalfClose{SessionHalfClose: &tunnelv1.SessionHalfClose{SessionId: id}}}
			case 4:
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionAbort{SessionAbort: &tunnelv1.SessionAbort{SessionId: id, Reason: tunnelv1.AbortReason(arg % 20)}}}
			case 5:
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionOpened{SessionOpened: &tunnelv1.SessionOpened{SessionId: id, Accepted: arg%2 == 0, InitialWindow: uint32(arg) * 4}}}
			case 6:
				ids := make([]uint64, arg%5)
				for i := range ids {
					ids[i] = id + uint64(2*i)
				}
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_SessionSync{SessionSync: &tunnelv1.SessionSync{SessionIds: ids, HighestPeerSessionId: uint64(arg % 256)}}}
			case 7:
				fr = &tunnelv1.Frame{}
			case 8:
				fr = &tunnelv1.Frame{Kind: &tunnelv1.Frame_Ping{Ping: &tunnelv1.Ping{Nonce: uint64(arg)}}}
			case 9:
				// A user reads one buffer from every session.
				m.mu.Lock()
				var all []*Session
				for _, s := range m.sessions {
					all = append(all, s)
				}
				m.mu.Unlock()
				for _, s := range all {
					m.mu.Lock()
					n := s.inq.len()
					m.mu.Unlock()
					if n > 0 {
						s.ReadBuffer(t.Context())
					}
				}
				continue
			}
			// Through the wire format, as a real peer's frame would come.
			b, err := proto.Marshal(fr)
			if err != nil {
				t.Fatal(err)
			}
			got := new(tunnelv1.Frame)
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			if err := m.dispatch(got); err != nil {
				m.fail(err)
				break
			}
			m.mu.Lock()
			for _, s := range m.sessions {
				if s.inBuffered > window || s.recvCredit < 0 || s.sendCredit < 0 || s.sendCredit > maxCredit {
					t.Fatalf("session %d: buffered %d, recv credit %d, send credit %d", s.id, s.inBuffered, s.recvCredit, s.sendCredit)
				}
				if s.state == stateOpen && s.recvCredit+s.inBuffered+s.unGranted != window {
					t.Fatalf("session %d: credit %d + buffered %d + ungranted %d != window %d", s.id, s.recvCredit, s.inBuffered, s.unGranted, window)
				}
			}
			m.mu.Unlock()
		}
		m.fail(errPipeClosed)
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.sessions) != 0 {
			t.Fatalf("%d sessions left after the Mux stopped", len(m.sessions))
		}
	})
}
