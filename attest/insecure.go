package attest

import (
	"context"
	"encoding/hex"

	"github.com/kettle-build/kettle/abi"
)

// insecureWarning is logged at start-up and should be repeated in every
// build's attest event.
const insecureWarning = "NO TEE: attester \"insecure\" writes evidence that carries only the report data and proves nothing about the machine; `kettle verify` rejects it unless --allow-insecure"

// insecureAttester is for machines without a TEE.
type insecureAttester struct{}

func (insecureAttester) Platform() string { return PlatformInsecure }

// Warning says loudly that the evidence proves nothing.
func (insecureAttester) Warning() string { return insecureWarning }

func (insecureAttester) Attest(ctx context.Context, rd [ReportDataSize]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, attestFailed(PlatformInsecure, err)
	}
	return abi.Marshal(PlatformInsecure, abi.InsecureEvidence{ReportData: hex.EncodeToString(rd[:])})
}
