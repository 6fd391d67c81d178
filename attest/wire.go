package attest

import (
	"encoding/base64"

	"github.com/kettle-build/kettle/abi"
)

// Platform tags kettle produces (package abi has the wire format).
const (
	PlatformAzSNP    = abi.PlatformAzSNP
	PlatformAzTDX    = abi.PlatformAzTDX
	PlatformSNP      = abi.PlatformSNP
	PlatformTDX      = abi.PlatformTDX
	PlatformInsecure = abi.PlatformInsecure
)

var (
	b64url = base64.RawURLEncoding
	b64std = base64.StdEncoding
)

func strPtr(s string) *string { return &s }
