package attest

import (
	"bytes"
	"context"
	"testing"
)

// TestSimSNPMeasurement: WithSimMeasurement puts the value in the signed
// report's MEASUREMENT; without it the fixed sim measurement stays.
func TestSimSNPMeasurement(t *testing.T) {
	var m [48]byte
	for i := range m {
		m[i] = byte(i + 1)
	}
	for _, tc := range []struct {
		opts []Option
		want []byte
	}{
		{[]Option{quiet, WithSimMeasurement(m)}, m[:]},
		{[]Option{quiet}, simMeasurement[:]},
	} {
		a, err := New(context.Background(), "sim-snp", tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		rd := testRD("sim-measurement")
		ev, err := a.Attest(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		c := checkVerdicts(t, ev, rd)
		if !bytes.Equal(c.Measurement, tc.want) {
			t.Fatalf("measurement %x, want %x", c.Measurement, tc.want)
		}
	}
}
