package tpm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

var fixtures = filepath.Join("..", "testdata", "attestation")

func quoteFromEvidence(t testing.TB, name string) (msg, sig []byte, pcrs [][]byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Evidence struct {
			TPMQuote struct {
				Signature, Message string
				PCRs               []string
			} `json:"tpm_quote"`
		}
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	q := env.Evidence.TPMQuote
	msg, _ = hex.DecodeString(q.Message)
	sig, _ = hex.DecodeString(q.Signature)
	for _, p := range q.PCRs {
		v, _ := hex.DecodeString(p)
		pcrs = append(pcrs, v)
	}
	return msg, sig, pcrs
}

func TestParseAndPCRs(t *testing.T) {
	for _, name := range []string{"az_snp/live-evidence.json", "az_snp/evidence-v1.json", "az_tdx/evidence-v1.json"} {
		msg, _, pcrs := quoteFromEvidence(t, name)
		a, err := ParseAttest(msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(a.Selections) != 1 || a.Selections[0].Hash != AlgSHA256 || len(a.Selections[0].PCRs) != 24 {
			t.Errorf("%s: selections %+v", name, a.Selections)
		}
		if err := CheckPCRs(a, pcrs); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		pcrs[7] = append([]byte(nil), pcrs[7]...)
		pcrs[7][0] ^= 1
		if err := CheckPCRs(a, pcrs); !errors.Is(err, ErrPCRDigest) {
			t.Errorf("%s: changed PCR 7: %v", name, err)
		}
	}
	msg, err := os.ReadFile(filepath.Join(fixtures, "az_snp/tpm-quote.msg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseAttest(msg); err != nil {
		t.Errorf("tpm-quote.msg: %v", err)
	}
	for name, m := range map[string][]byte{
		"trailing": append(append([]byte(nil), msg...), 0),
		"short":    msg[:len(msg)-1],
		"magic":    append([]byte{0}, msg[1:]...),
		"type":     append(append([]byte(nil), msg[:4]...), append([]byte{0x80, 0x17}, msg[6:]...)...),
	} {
		if _, err := ParseAttest(m); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSignature(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("quote")
	d := sha256.Sum256(msg)
	sig, _ := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
	if err := VerifySignature(&k.PublicKey, msg, sig); err != nil {
		t.Fatal(err)
	}
	if err := VerifySignature(&k.PublicKey, []byte("quotf"), sig); !errors.Is(err, ErrSignature) {
		t.Errorf("changed message: %v", err)
	}
}

func FuzzTPMSAttest(f *testing.F) {
	for _, name := range []string{"az_snp/live-evidence.json", "az_tdx/evidence-v1.json"} {
		msg, _, _ := quoteFromEvidence(f, name)
		f.Add(msg)
	}
	if b, err := os.ReadFile(filepath.Join(fixtures, "az_snp/tpm-quote.msg")); err == nil {
		f.Add(b)
	}
	pcrs := make([][]byte, 24)
	for i := range pcrs {
		pcrs[i] = make([]byte, 32)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAttest(b)
		if err != nil {
			return
		}
		CheckPCRs(a, pcrs)
	})
}
