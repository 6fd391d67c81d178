//go:build js && wasm

// Command wasm is the verify package compiled to WebAssembly for kettle's
// web page (docs/web.md). It registers one function,
//
//	kettleVerify(tarball Uint8Array, fileName string, nonce string, allowInsecure bool) Promise<string>
//
// whose promise resolves to the Report's JSON (what `kettle verify --json`
// prints) or rejects with an Error. It never uses the network: no Getter is
// given, so evidence without its endorsements fails as it does offline on
// the command line.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall/js"

	"github.com/kettle-build/kettle/verify"
)

func main() {
	js.Global().Set("kettleVerify", js.FuncOf(verifyFunc))
	js.Global().Call("dispatchEvent", js.Global().Get("Event").New("kettle-verify-ready"))
	select {} // keep the exported function alive
}

func verifyFunc(this js.Value, args []js.Value) any {
	promise := js.Global().Get("Promise")
	return promise.New(js.FuncOf(func(_ js.Value, pr []js.Value) any {
		resolve, reject := pr[0], pr[1]
		go func() {
			out, err := run(args)
			if err != nil {
				reject.Invoke(js.Global().Get("Error").New(err.Error()))
				return
			}
			resolve.Invoke(out)
		}()
		return nil
	}))
}

func run(args []js.Value) (string, error) {
	if len(args) != 4 || args[0].Type() != js.TypeObject {
		return "", errors.New("kettleVerify(tarball, fileName, nonce, allowInsecure)")
	}
	buf := make([]byte, args[0].Get("length").Int())
	js.CopyBytesToGo(buf, args[0])
	var opts []verify.BundleOption
	nonce, err := parseNonce(args[2].String())
	if err != nil {
		return "", err
	}
	if nonce != nil {
		opts = append(opts, verify.WithNonce(nonce))
	} else {
		// As `kettle verify` without expectations: checked, with the
		// report's warning that it may be anyone's build.
		opts = append(opts, verify.WithoutExpectationsUnsafe())
	}
	if args[3].Truthy() {
		opts = append(opts, verify.WithAllowInsecureUnsafe())
	}
	r, err := verify.BundleTarball(context.Background(), bytes.NewReader(buf), args[1].String(), opts...)
	if err != nil {
		return "", err
	}
	b, err := r.JSON()
	return string(b), err
}

// parseNonce reads the nonce as `kettle verify --nonce` does: hex of 1-16
// bytes (optionally 0x-prefixed) or a UUID; empty is no nonce.
func parseNonce(s string) ([]byte, error) {
	h := strings.TrimPrefix(strings.TrimSpace(s), "0x")
	if h == "" {
		return nil, nil
	}
	if len(h) == 36 && strings.Count(h, "-") == 4 {
		h = strings.ReplaceAll(h, "-", "")
	}
	n, err := hex.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("nonce: invalid hex: %v", err)
	}
	if len(n) == 0 || len(n) > 16 {
		return nil, fmt.Errorf("the nonce must be 1-16 bytes, got %d", len(n))
	}
	return n, nil
}
