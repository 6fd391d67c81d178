package web

import "time"

// zeroTime: embedded files have no modification time, so no
// Last-Modified; ServeContent still answers ranges and HEAD.
var zeroTime time.Time
