package api

import (
	"context"
	"errors"
	"io"

	"github.com/kettle-build/kettle/api/request"
)

// parseJSON and parseMultipart adapt the streaming parsers of api/request:
// a *request.Error becomes the status and one-line message it carries.
func parseJSON(ctx context.Context, ct string, body io.Reader, spool string, max int64) (*request.Build, error) {
	return adapt(request.ParseJSON(ctx, ct, body, spool, max))
}

func parseMultipart(ctx context.Context, ct string, body io.Reader, spool string, max int64) (*request.Build, error) {
	return adapt(request.ParseMultipart(ctx, ct, body, spool, max))
}

func adapt(b *request.Build, err error) (*request.Build, error) {
	if err != nil {
		var re *request.Error
		if errors.As(err, &re) {
			return nil, &statusError{code: re.Status, msg: re.Msg, err: err}
		}
		return nil, err
	}
	return b, nil
}
