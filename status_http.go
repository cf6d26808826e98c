package mesh

import (
	"encoding/json"
	"net/http"
)

// StatusHandler returns an http.Handler that serves NewStatus(router) as
// indented JSON, with Content-Type application/json. It answers GET and
// HEAD; other methods get 405 Method Not Allowed. It is safe to poll: a
// snapshot holds the router's locks only briefly.
func StatusHandler(router *Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.MarshalIndent(NewStatus(router), "", "  ")
		if err != nil {
			// Only OverlayDiagnostics, which the overlay provides, can fail
			// to encode.
			http.Error(w, "encoding the status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})
}
