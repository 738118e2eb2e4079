// A SPIFFE Workload API for the test platform, on go-spiffe's generated Workload API protobufs:
// one in-memory CA for a test trust domain, and one Unix socket per workload identity (a test
// gives each controller the socket of the identity it should have, instead of attesting
// processes). X.509-SVIDs live for --ttl and are re-issued and streamed at half of it, so that
// clients see rotation within a test.
//
//	spiffe-workload-api --trust-domain driftless.test --ttl 20s \
//	    --serve /tmp/sc.sock=spiffe://driftless.test/source-controller \
//	    --serve /tmp/kc.sock=spiffe://driftless.test/kustomize-controller \
//	    --bundle-out /tmp/bundle.pem
//
// It prints "ready" on stdout once every socket listens.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type serves []string

func (s *serves) String() string     { return strings.Join(*s, ",") }
func (s *serves) Set(v string) error { *s = append(*s, v); return nil }

type authority struct {
	trustDomain string
	key         *ecdsa.PrivateKey
	cert        *x509.Certificate
	ttl         time.Duration
}

func newAuthority(trustDomain string, ttl time.Duration) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id, _ := url.Parse("spiffe://" + trustDomain)
	template := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"driftless test"}, CommonName: trustDomain + " CA"},
		URIs:                  []*url.URL{id},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{trustDomain: trustDomain, key: key, cert: cert, ttl: ttl}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// issue makes an X.509-SVID for id: the leaf alone (no intermediates) and its PKCS#8 key.
func (a *authority) issue(id *url.URL) (*workload.X509SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"SPIFFE"}},
		URIs:         []*url.URL{id},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(a.ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		// X.509-SVID: a leaf says it is not a CA (clients reject one without the extension).
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &workload.X509SVID{SpiffeId: id.String(), X509Svid: der, X509SvidKey: pkcs8, Bundle: a.cert.Raw}, nil
}

// api serves one identity on one socket.
type api struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	authority *authority
	id        *url.URL
}

// The Workload API requires this header from every client (SPIFFE Workload Endpoint spec).
func checkHeader(ctx context.Context) error {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok || len(md.Get("workload.spiffe.io")) != 1 || md.Get("workload.spiffe.io")[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *api) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	rotate := time.NewTicker(s.authority.ttl / 2)
	defer rotate.Stop()
	for {
		svid, err := s.authority.issue(s.id)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if err := stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{svid}}); err != nil {
			return err
		}
		log.Printf("issued an X.509-SVID for %s", s.id)
		select {
		case <-stream.Context().Done():
			return nil
		case <-rotate.C:
		}
	}
}

func (s *api) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	bundles := map[string][]byte{"spiffe://" + s.authority.trustDomain: s.authority.cert.Raw}
	if err := stream.Send(&workload.X509BundlesResponse{Bundles: bundles}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func main() {
	var sockets serves
	trustDomain := flag.String("trust-domain", "driftless.test", "the trust domain")
	ttl := flag.Duration("ttl", 20*time.Second, "X.509-SVID lifetime; re-issued at half of it")
	bundleOut := flag.String("bundle-out", "", "write the trust bundle (PEM) here")
	flag.Var(&sockets, "serve", "SOCKET=SPIFFE-ID: serve that identity on that Unix socket (repeatable)")
	flag.Parse()
	if len(sockets) == 0 {
		log.Fatal("no --serve SOCKET=SPIFFE-ID given")
	}
	authority, err := newAuthority(*trustDomain, *ttl)
	if err != nil {
		log.Fatal(err)
	}
	if *bundleOut != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: authority.cert.Raw})
		if err := os.WriteFile(*bundleOut, pemBytes, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	var servers []*grpc.Server
	for _, serve := range sockets {
		path, rawID, ok := strings.Cut(serve, "=")
		id, err := url.Parse(rawID)
		if !ok || err != nil || id.Scheme != "spiffe" || id.Host != *trustDomain {
			log.Fatalf("--serve %q: want SOCKET=spiffe://%s/PATH", serve, *trustDomain)
		}
		_ = os.Remove(path)
		listener, err := net.Listen("unix", path)
		if err != nil {
			log.Fatal(err)
		}
		server := grpc.NewServer()
		workload.RegisterSpiffeWorkloadAPIServer(server, &api{authority: authority, id: id})
		servers = append(servers, server)
		go func() {
			if err := server.Serve(listener); err != nil {
				log.Printf("%s: %v", path, err)
			}
		}()
	}
	fmt.Println("ready")
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	for _, server := range servers {
		server.Stop()
	}
}
