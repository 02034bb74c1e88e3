package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// requestBody returns a new value of the body type a route takes, or nil
// for a route without a body.
func requestBody(pattern string) any {
	switch pattern {
	case "POST /v1/operations":
		return new(StartRequest)
	case "POST /v1/operations/{id}/cancel":
		return new(CancelRequest)
	case "POST /v1/operations/{id}/relaunch":
		return new(RelaunchRequest)
	case "POST /v1/operations/{id}/signal":
		return new(SignalRequest)
	case "POST /v1/tokens":
		return new(TokenRequest)
	case "PUT /v1/flags/{kind}":
		return new(FlagChange)
	case "POST /v1/bulk":
		return new(BulkRequest)
	case "POST /v1/bulk/{jobId}/pause", "POST /v1/bulk/{jobId}/resume", "POST /v1/bulk/{jobId}/stop":
		return new(BulkControl)
	case "POST /v1/bulk/{jobId}/retry-failed":
		return new(BulkRetry)
	}
	return nil
}

// optionalBody reports whether a route's body may be left out.
func optionalBody(pattern string) bool {
	return strings.HasPrefix(pattern, "POST /v1/bulk/{jobId}/")
}

// strictBody checks a route's JSON body before the generated handler decodes
// it (leniently): at most limit bytes, application/json, one JSON object
// whose fields the schema names and whose values have the schema's types.
// It puts the body back for the generated decoder.
func strictBody(limit int64) MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v := requestBody(r.Pattern)
			if v == nil {
				next.ServeHTTP(w, r)
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "" {
				if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
					writeProblem(w, r, &problemError{status: http.StatusUnsupportedMediaType, kind: "unsupported-media-type",
						title: "Unsupported media type", detail: fmt.Sprintf("the body must be application/json, not %q", ct)})
					return
				}
			}
			b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeProblem(w, r, &problemError{status: http.StatusRequestEntityTooLarge, kind: "body-too-large",
					title: "Request body too large", detail: fmt.Sprintf("the body is over the limit of %d bytes", limit)})
				return
			}
			if err != nil {
				writeProblem(w, r, badRequest("", "reading the body: %v", err))
				return
			}
			if len(bytes.TrimSpace(b)) == 0 && optionalBody(r.Pattern) {
				r.Body = http.NoBody
				next.ServeHTTP(w, r)
				return
			}
			if err := decodeStrict(b, v); err != nil {
				writeProblem(w, r, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
			next.ServeHTTP(w, r)
		})
	}
}

// decodeStrict decodes one JSON value into v, refusing fields v does not
// name, values of the wrong type and anything after the value. Its errors
// name the field.
func decodeStrict(b []byte, v any) *problemError {
	if len(bytes.TrimSpace(b)) == 0 {
		return badRequest("", "a JSON body is required")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return badRequest("", "the body has data after its JSON value")
		}
		return nil
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return badRequest("", "malformed JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("", "the body must be a JSON object, not %s", typ.Value)
		}
		return badRequest(typ.Field, "must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest(f, "is not a field of this request")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "the JSON body ends early")
	}
	return badRequest("", "%v", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + goKind
}
