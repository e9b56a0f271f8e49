// Command istiod-test runs istiod's discovery server (its real config store, service
// registries, push machinery and xDS generators, as assembled by istiod's own test server
// in istio.io/istio/pilot/test/xds) on loopback, without Kubernetes, for vm-proxy's tests.
//
// Stock pilot-discovery cannot be used for this: at the pinned Istio commit it panics
// without a Kubernetes client (the ServiceEntry registry dereferences the nil multicluster
// controller), so this program hosts the same server parts the way istiod's tests do.
//
// On stdout it prints one line per address it serves, then "ready":
//
//	listening 127.0.0.1:PORT   plaintext ADS (SotW and Delta), like istiod's 15010
//	control 127.0.0.1:PORT     HTTP: POST/DELETE /config, GET /debug/... (istiod's debug views)
//	secure 127.0.0.1:PORT      TLS ADS and the Istio CA, like istiod's 15012 (with --secure-listen)
//	ready
//
// Everything else (istiod's own logs) goes to stderr.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pilot/pkg/xds"
	v3 "istio.io/istio/pilot/pkg/xds/v3"
	xdsfake "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	istiolog "istio.io/istio/pkg/log"
)

// systemNamespace is where istiod itself runs; callers with an identity there may read
// every debug view, as with a real istiod.
const systemNamespace = "istio-system"

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

type options struct {
	listen       string
	control      string
	secureListen string
	configFiles  stringList
	meshFile     string
	tokens       stringList
	rootCertOut  string
	debugAuth    bool
	logLevel     string
	stdinEOF     bool
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("istiod-test", flag.ContinueOnError)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "plaintext ADS address (port 0 picks one)")
	fs.StringVar(&o.control, "control", "127.0.0.1:0", "HTTP control address (port 0 picks one)")
	fs.StringVar(&o.secureListen, "secure-listen", "",
		"TLS address for ADS and the Istio CA, with a self-signed root (empty: not served)")
	fs.Var(&o.configFiles, "config", "Istio YAML file, multi-document (repeatable)")
	fs.StringVar(&o.meshFile, "mesh", "", "MeshConfig YAML file, as in istiod's mesh ConfigMap key (default: Istio's defaults)")
	fs.Var(&o.tokens, "token", "TOKEN=SPIFFE-ID: a bearer token the CA and TLS ADS accept for that identity (repeatable)")
	fs.StringVar(&o.rootCertOut, "root-cert-out", "", "file to write the CA's root certificate (PEM) to (with --secure-listen)")
	fs.BoolVar(&o.debugAuth, "debug-auth", false,
		"require an authenticated identity for istio.io/debug/* on ADS (istiod's ENABLE_DEBUG_ENDPOINT_AUTH)")
	fs.StringVar(&o.logLevel, "log-level", "info", "istiod's log level for all scopes (debug, info, warn, error, none)")
	fs.BoolVar(&o.stdinEOF, "exit-on-stdin-eof", false,
		"exit when stdin reaches end of file, so the server dies with the process that holds its stdin")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.secureListen == "" && (len(o.tokens) > 0 || o.rootCertOut != "") {
		return nil, errors.New("--token and --root-cert-out need --secure-listen")
	}
	return o, nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "istiod-test: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if err := configureLogs(o.logLevel); err != nil {
		return err
	}
	tokens, err := parseTokens(o.tokens)
	if err != nil {
		return err
	}

	// Bind every port before anything else, so a taken port is reported plainly and early.
	xdsLn, err := listen("--listen", o.listen)
	if err != nil {
		return err
	}
	controlLn, err := listen("--control", o.control)
	if err != nil {
		return err
	}
	var secureLn net.Listener
	if o.secureListen != "" {
		if secureLn, err = listen("--secure-listen", o.secureListen); err != nil {
			return err
		}
	}

	m := mesh.DefaultMeshConfig()
	if o.meshFile != "" {
		if m, err = readMesh(o.meshFile); err != nil {
			return err
		}
	}
	v, err := newValidator()
	if err != nil {
		return err
	}
	var configs []config.Config
	for _, f := range o.configFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--config %s: %v", f, err)
		}
		docs, err := v.parse(string(data))
		if err != nil {
			return fmt.Errorf("--config %s: %v", f, err)
		}
		for _, d := range docs {
			configs = append(configs, d.config)
		}
	}

	features.EnableDebugEndpointAuth = o.debugAuth
	failer := newFailer()
	defer failer.runCleanups()
	fake, err := startDiscovery(failer, xdsfake.FakeOptions{
		Configs:         configs,
		MeshConfig:      m,
		ListenerBuilder: func() (net.Listener, error) { return xdsLn, nil },
		// istiod's own default; the test server's zero would push on every single event.
		DebounceTime: features.DebounceAfter,
	})
	if err != nil {
		return err
	}
	// The test server wires istiod's debug generator without the debug views it serves;
	// give it the same internal mux istiod does, so istio.io/debug requests get answers.
	fake.Discovery.Generators[v3.DebugType] = xds.NewDebugGen(fake.Discovery, systemNamespace, fake.DiscoveryDebug)

	var secureErr <-chan error
	if secureLn != nil {
		sec, err := startSecure(secureLn, fake.Discovery, tokens, m.GetTrustDomain())
		if err != nil {
			return err
		}
		failer.Cleanup(sec.stop)
		if o.rootCertOut != "" {
			if err := os.WriteFile(o.rootCertOut, sec.rootCertPEM, 0o644); err != nil {
				return fmt.Errorf("--root-cert-out %s: %v", o.rootCertOut, err)
			}
		}
		secureErr = sec.errs
	}
	store := &configStore{store: fake.Store(), validator: v}
	controlErr := serveControl(controlLn, store, fake.DiscoveryDebug)

	fmt.Printf("listening %s\n", xdsLn.Addr())
	fmt.Printf("control %s\n", controlLn.Addr())
	if secureLn != nil {
		fmt.Printf("secure %s\n", secureLn.Addr())
	}
	fmt.Println("ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	stdinClosed := make(chan struct{})
	if o.stdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinClosed)
		}()
	}
	select {
	case s := <-signals:
		istiolog.Infof("istiod-test: %v, shutting down", s)
		return nil
	case <-stdinClosed:
		istiolog.Infof("istiod-test: stdin closed, shutting down")
		return nil
	case err := <-controlErr:
		return fmt.Errorf("control server on %s: %v", controlLn.Addr(), err)
	case err := <-secureErr:
		return fmt.Errorf("secure server on %s: %v", secureLn.Addr(), err)
	case err := <-failer.failures:
		return err
	}
}

func listen(flagName, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: cannot listen: %v", flagName, addr, err)
	}
	return ln, nil
}

// configureLogs sends istiod's logs to stderr, keeping stdout for the address lines.
func configureLogs(level string) error {
	switch level {
	case "debug", "info", "warn", "error", "none":
	default:
		return fmt.Errorf("--log-level %q: not one of debug, info, warn, error, none", level)
	}
	lo := istiolog.DefaultOptions()
	lo.OutputPaths = []string{"stderr"}
	lo.ErrorOutputPaths = []string{"stderr"}
	lo.SetDefaultOutputLevel(istiolog.OverrideScopeName, istiolog.StringToLevel(level))
	if err := istiolog.Configure(lo); err != nil {
		return fmt.Errorf("configuring istiod's logs: %v", err)
	}
	return nil
}

// readMesh parses a MeshConfig with istiod's own reader, which fills in Istio's defaults
// and reports istiod's own errors.
func readMesh(file string) (*meshconfig.MeshConfig, error) {
	m, err := mesh.ReadMeshConfig(file)
	if err != nil {
		return nil, fmt.Errorf("--mesh %s: %v", file, err)
	}
	return m, nil
}

// startDiscovery builds istiod's test discovery server. Its fatal reports end the calling
// goroutine, so it is built on one of its own, and a failure comes back as an error.
func startDiscovery(f *failer, opts xdsfake.FakeOptions) (*xdsfake.FakeDiscoveryServer, error) {
	built := make(chan *xdsfake.FakeDiscoveryServer, 1)
	go func() { built <- xdsfake.NewFakeDiscoveryServer(f, opts) }()
	select {
	case fake := <-built:
		return fake, nil
	case err := <-f.failures:
		return nil, err
	}
}
