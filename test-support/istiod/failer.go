package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"

	istiolog "istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
)

// failer stands in for the *testing.T that istiod's test server expects: a fatal report
// from any of its goroutines ends this program with that message, and cleanups run when
// the program stops.
type failer struct {
	mu       sync.Mutex
	cleanups []func()
	failures chan error
}

var _ test.Failer = (*failer)(nil)

func newFailer() *failer {
	return &failer{failures: make(chan error, 1)}
}

// fail hands the error to run() and stops the calling goroutine, as testing.T.FailNow
// does, so the code after a fatal report in istiod's test server never runs.
func (f *failer) fail(err error) {
	select {
	case f.failures <- err:
	default:
	}
	runtime.Goexit()
}

func (f *failer) Fail()    { f.fail(fmt.Errorf("istiod's test server reported a failure")) }
func (f *failer) FailNow() { f.Fail() }

func (f *failer) Fatal(args ...any) {
	f.fail(fmt.Errorf("istiod: %s", fmt.Sprint(args...)))
}

func (f *failer) Fatalf(format string, args ...any) {
	f.fail(fmt.Errorf("istiod: "+format, args...))
}

func (f *failer) Skip(args ...any) {
	f.fail(fmt.Errorf("istiod's test server asked to skip: %s", fmt.Sprint(args...)))
}

func (f *failer) Log(args ...any)                 { istiolog.Info(fmt.Sprint(args...)) }
func (f *failer) Logf(format string, args ...any) { istiolog.Infof(format, args...) }
func (f *failer) Helper()                         {}

func (f *failer) TempDir() string {
	dir, err := os.MkdirTemp("", "istiod-test-")
	if err != nil {
		f.Fatalf("cannot create a temporary directory: %v", err)
	}
	f.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (f *failer) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// runCleanups runs the registered cleanups, last first, as testing.T does.
func (f *failer) runCleanups() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}
