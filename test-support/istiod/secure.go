package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"istio.io/istio/pilot/pkg/xds"
	"istio.io/istio/pkg/security"
	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/security/pkg/pki/ca"
	caserver "istio.io/istio/security/pkg/server/ca"
	"istio.io/istio/security/pkg/server/ca/authenticate"
)

// Lifetimes of the self-signed CA, istiod's serving certificate and workload certificates:
// istiod's defaults for the CA root and workload certificates.
const (
	rootCertTTL     = 10 * 365 * 24 * time.Hour
	servingCertTTL  = 365 * 24 * time.Hour
	workloadCertTTL = 24 * time.Hour
	maxWorkloadTTL  = 90 * 24 * time.Hour
	caRSAKeySize    = 2048
)

// istiodNames are the names istiod's serving certificate carries, so clients that verify
// "istiod.istio-system.svc" (the default discovery address) accept it.
var istiodNames = []string{
	"istiod.istio-system.svc",
	"istiod.istio-system.svc.cluster.local",
	"istiod-remote.istio-system.svc",
	"localhost",
}

// tokenAuthenticator accepts the bearer tokens given with --token, each standing for one
// SPIFFE identity, where a real istiod would review a Kubernetes service account token.
type tokenAuthenticator struct {
	identities map[string]string
}

var _ security.Authenticator = (*tokenAuthenticator)(nil)

func (a *tokenAuthenticator) AuthenticatorType() string { return "TestTokenAuthenticator" }

func (a *tokenAuthenticator) Authenticate(ctx security.AuthContext) (*security.Caller, error) {
	for _, h := range ctx.Header("authorization") {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			continue
		}
		if id, ok := a.identities[strings.TrimSpace(token)]; ok {
			return &security.Caller{AuthSource: security.AuthSourceIDToken, Identities: []string{id}}, nil
		}
	}
	return nil, errors.New("no bearer token given with --token was presented")
}

// parseTokens reads TOKEN=SPIFFE-ID pairs.
func parseTokens(pairs []string) (map[string]string, error) {
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		token, id, ok := strings.Cut(p, "=")
		if !ok || token == "" {
			return nil, fmt.Errorf("--token %q: want TOKEN=SPIFFE-ID", p)
		}
		if _, err := spiffe.ParseIdentity(id); err != nil {
			return nil, fmt.Errorf("--token %q: %v", p, err)
		}
		out[token] = id
	}
	return out, nil
}

// secureServer is istiod's TLS port: ADS and the Istio CA behind a certificate from the CA.
type secureServer struct {
	rootCertPEM []byte
	errs        <-chan error
	stop        func()
}

// startSecure creates istiod's self-signed CA (as istiod does without Kubernetes), issues
// istiod's serving certificate from it and serves ADS and the CA on ln. Callers
// authenticate with a workload certificate from this CA or a --token bearer token.
func startSecure(ln net.Listener, discovery *xds.DiscoveryServer, tokens map[string]string, trustDomain string) (*secureServer, error) {
	caOpts, err := ca.NewSelfSignedDebugIstioCAOptions("", rootCertTTL, workloadCertTTL, maxWorkloadTTL, trustDomain, caRSAKeySize)
	if err != nil {
		return nil, fmt.Errorf("creating the self-signed CA: %v", err)
	}
	istioCA, err := ca.NewIstioCA(caOpts)
	if err != nil {
		return nil, fmt.Errorf("creating the Istio CA: %v", err)
	}
	certPEM, keyPEM, err := istioCA.GenKeyCert(istiodNames, servingCertTTL, false)
	if err != nil {
		return nil, fmt.Errorf("issuing istiod's serving certificate: %v", err)
	}
	serving, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading istiod's serving certificate: %v", err)
	}
	rootPEM := istioCA.GetCAKeyCertBundle().GetRootCertPem()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil, errors.New("the CA's root certificate does not parse")
	}

	authenticators := []security.Authenticator{
		&authenticate.ClientCertAuthenticator{},
		&tokenAuthenticator{identities: tokens},
	}
	caServer, err := caserver.New(istioCA, workloadCertTTL, authenticators, nil)
	if err != nil {
		return nil, fmt.Errorf("creating the CA server: %v", err)
	}
	// Plaintext ADS stays unauthenticated (security.Authenticate skips non-TLS peers), as on
	// istiod's 15010; TLS ADS callers must prove an identity, as on 15012. Set before the
	// addresses are announced, so no proxy has connected yet.
	discovery.Authenticators = authenticators

	grpcServer := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    roots,
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"},
	})))
	discovery.Register(grpcServer)
	caServer.Register(grpcServer)
	errs := make(chan error, 1)
	go func() {
		if err := grpcServer.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errs <- err
		}
	}()
	return &secureServer{rootCertPEM: rootPEM, errs: errs, stop: grpcServer.Stop}, nil
}
