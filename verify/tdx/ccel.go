package tdx

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrEventLog reports a malformed CC event log or one that does not replay
// to the quote's RTMRs.
var ErrEventLog = errors.New("CC event log")

const (
	algSHA384      = 0x000C
	maxEvents      = 1 << 16
	specIDSig      = "Spec ID Event03\x00"
	evNoAction     = 0x00000003
	sha1DigestSize = 20
)

// Event is one TCG_PCR_EVENT2 of a CCEL (the TDX event log in the ACPI CCEL
// table). MRIndex 1..4 extends RTMR0..3.
type Event struct {
	MRIndex uint32
	Type    uint32
	Digest  [48]byte // SHA-384
	Data    []byte
}

// ParseEventLog decodes a crypto-agile TCG event log as TDX firmware writes
// it: a TCG_PCClientPCREvent "Spec ID Event03" header, then TCG_PCR_EVENT2
// records, ending at the end of the data or at padding (0xFF or zero
// records). Every record must carry a SHA-384 digest.
func ParseEventLog(b []byte) ([]Event, error) {
	le := binary.LittleEndian
	r := &rd{b: b}
	r.take(8) // MR index, event type
	r.take(sha1DigestSize)
	hdr := r.take(int(r.u32()))
	if r.err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrEventLog, r.err)
	}
	if len(hdr) < 28 || !bytes.Equal(hdr[:16], []byte(specIDSig)) {
		return nil, fmt.Errorf("%w: no Spec ID Event03 header", ErrEventLog)
	}
	n := int(le.Uint32(hdr[24:]))
	if n > 16 || len(hdr) < 28+4*n {
		return nil, fmt.Errorf("%w: %d digest algorithms", ErrEventLog, n)
	}
	sizes := map[uint16]int{}
	for i := 0; i < n; i++ {
		sizes[le.Uint16(hdr[28+4*i:])] = int(le.Uint16(hdr[30+4*i:]))
	}
	if sizes[algSHA384] != 48 {
		return nil, fmt.Errorf("%w: the log has no SHA-384 digests", ErrEventLog)
	}
	var out []Event
	for len(b)-r.off >= 8 {
		idx, typ := le.Uint32(b[r.off:]), le.Uint32(b[r.off+4:])
		if idx == 0xFFFFFFFF || idx == 0 && typ == 0 {
			break // padding after the last record
		}
		if len(out) == maxEvents {
			return nil, fmt.Errorf("%w: more than %d events", ErrEventLog, maxEvents)
		}
		r.take(8)
		ev := Event{MRIndex: idx, Type: typ}
		count := r.u32()
		if count > 16 {
			return nil, fmt.Errorf("%w: event %d has %d digests", ErrEventLog, len(out), count)
		}
		found := false
		for i := uint32(0); i < count && r.err == nil; i++ {
			alg := r.u16()
			size, ok := sizes[alg]
			if !ok {
				return nil, fmt.Errorf("%w: event %d: unknown digest algorithm 0x%04x", ErrEventLog, len(out), alg)
			}
			d := r.take(size)
			if alg == algSHA384 && d != nil {
				copy(ev.Digest[:], d)
				found = true
			}
		}
		ev.Data = r.take(int(r.u32()))
		if r.err != nil {
			return nil, fmt.Errorf("%w: event %d: %w", ErrEventLog, len(out), r.err)
		}
		if !found {
			return nil, fmt.Errorf("%w: event %d has no SHA-384 digest", ErrEventLog, len(out))
		}
		out = append(out, ev)
	}
	return out, nil
}

// Replay extends RTMR0..3 from zero with every event of MR index 1..4.
func Replay(events []Event) [4][48]byte {
	var rtmr [4][48]byte
	h := sha512.New384()
	for _, e := range events {
		if e.MRIndex < 1 || e.MRIndex > 4 || e.Type == evNoAction {
			continue
		}
		i := e.MRIndex - 1
		h.Reset()
		h.Write(rtmr[i][:])
		h.Write(e.Digest[:])
		h.Sum(rtmr[i][:0])
	}
	return rtmr
}

// CheckEventLog parses log and checks that it replays to the body's RTMRs.
func CheckEventLog(b *Body, log []byte) ([]Event, error) {
	events, err := ParseEventLog(log)
	if err != nil {
		return nil, err
	}
	got := Replay(events)
	for i := range got {
		if got[i] != b.RTMRs[i] {
			return events, fmt.Errorf("%w: replayed RTMR%d %x differs from the quote's %x", ErrEventLog, i, got[i][:8], b.RTMRs[i][:8])
		}
	}
	return events, nil
}
