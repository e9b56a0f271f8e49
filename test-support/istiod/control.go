package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"istio.io/istio/pilot/pkg/model"
	istiolog "istio.io/istio/pkg/log"
)

// maxBody bounds a control request; test configs are a few kilobytes.
const maxBody = 4 << 20

// readHeaderTimeout keeps a stalled client from holding a connection forever.
const readHeaderTimeout = 10 * time.Second

// configStore applies run-time changes to istiod's config store, which pushes them to the
// connected proxies exactly as a change from Kubernetes would.
type configStore struct {
	mu        sync.Mutex // one apply or delete at a time, so each sees the last one's result
	store     model.ConfigStoreController
	validator *validator
}

// apply creates each document's object or replaces the one of the same kind, namespace and
// name, as `kubectl apply` does. Every document is checked before any is applied.
func (s *configStore) apply(text string) ([]string, error) {
	docs, err := s.validator.parse(text)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, errors.New("no documents in the request")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var done []string
	for _, d := range docs {
		verb := "created"
		if s.store.Get(d.gvk, d.name, d.ns) == nil {
			if _, err := s.store.Create(d.config); err != nil {
				return done, fmt.Errorf("document %d (%s): create: %v", d.index, d, err)
			}
		} else {
			verb = "configured"
			if _, err := s.store.Update(d.config); err != nil {
				return done, fmt.Errorf("document %d (%s): update: %v", d.index, d, err)
			}
		}
		istiolog.Infof("istiod-test: %s %s", d, verb)
		done = append(done, fmt.Sprintf("%s %s", d, verb))
	}
	return done, nil
}

// errNotFound marks a delete of something that is not there (HTTP 404).
var errNotFound = errors.New("not found")

// remove deletes each named object; all must exist, as with `kubectl delete -f`.
func (s *configStore) remove(text string) ([]string, error) {
	docs, err := refs(text)
	if err != nil {
		return nil, err
	}
	if len(docs) == 0 {
		return nil, errors.New("no documents in the request")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range docs {
		if s.store.Get(d.gvk, d.name, d.ns) == nil {
			return nil, fmt.Errorf("document %d (%s): %w", d.index, d, errNotFound)
		}
	}
	var done []string
	for _, d := range docs {
		if err := s.store.Delete(d.gvk, d.name, d.ns, nil); err != nil {
			return done, fmt.Errorf("document %d (%s): delete: %v", d.index, d, err)
		}
		istiolog.Infof("istiod-test: %s deleted", d)
		done = append(done, fmt.Sprintf("%s deleted", d))
	}
	return done, nil
}

// serveControl serves POST /config (apply YAML), DELETE /config (delete what the YAML
// names) and istiod's debug views under /debug/. Serving errors arrive on the channel.
func serveControl(ln net.Listener, s *configStore, debug http.Handler) <-chan error {
	mux := http.NewServeMux()
	mux.HandleFunc("/config", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
		if err != nil {
			http.Error(w, fmt.Sprintf("reading the request body: %v", err), http.StatusBadRequest)
			return
		}
		var done []string
		switch r.Method {
		case http.MethodPost, http.MethodPut:
			done, err = s.apply(string(body))
		case http.MethodDelete:
			done, err = s.remove(string(body))
		default:
			w.Header().Set("Allow", "POST, PUT, DELETE")
			http.Error(w, "use POST or PUT to apply YAML, DELETE to delete it", http.StatusMethodNotAllowed)
			return
		}
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, errNotFound) {
				code = http.StatusNotFound
			}
			istiolog.Warnf("istiod-test: %s /config: %v", r.Method, err)
			msg := err.Error()
			if len(done) > 0 {
				msg = strings.Join(done, "\n") + "\n" + msg
			}
			http.Error(w, msg, code)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, strings.Join(done, "\n")+"\n")
	})
	mux.Handle("/debug/", debug)
	errs := make(chan error, 1)
	go func() {
		errs <- (&http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}).Serve(ln)
	}()
	return errs
}
