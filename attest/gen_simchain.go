//go:build ignore

// gen_simchain writes simchain/: the test-only AMD certificate chain and
// VCEK key of the sim-snp attester, made once by go-sev-guest's own test
// code. The kettle binary embeds the result instead of linking
// go-sev-guest/testing, whose package init parses five private keys (an RSA
// 4096 one among them) in every process, `kettle verify` included.
//
//	go generate ./attest
package main

import (
	"crypto/x509"
	"encoding/pem"
	"log"
	"os"
	"path/filepath"
	"time"

	sevtesting "github.com/google/go-sev-guest/testing"
)

func main() {
	// Keep in step with simProductName and simChainTime in sim.go.
	s, err := sevtesting.DefaultTestOnlyCertChain("Milan-B1", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		log.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(s.Keys.Vcek)
	if err != nil {
		log.Fatal(err)
	}
	out := map[string]*pem.Block{
		"ark.pem":      {Type: "CERTIFICATE", Bytes: s.Ark.Raw},
		"ask.pem":      {Type: "CERTIFICATE", Bytes: s.Ask.Raw},
		"vcek.pem":     {Type: "CERTIFICATE", Bytes: s.Vcek.Raw},
		"vcek.key.pem": {Type: "PRIVATE KEY", Bytes: key},
	}
	for name, b := range out {
		if err := os.WriteFile(filepath.Join("simchain", name), pem.EncodeToMemory(b), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
