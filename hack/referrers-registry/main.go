// referrers-registry: an OCI registry for tests that serves the OCI 1.1 referrers API
// (GET /v2/<repo>/referrers/<digest>), which the platform's docker-registry (distribution 2.8)
// lacks. It is go-containerregistry's pkg/registry with referrers switched on, plus the parts
// of the distribution spec v1.1 that pkg/registry leaves out and clients rely on:
//
//   - a referrer's descriptor carries the manifest's own `artifactType` (pkg/registry reports
//     the config's mediaType instead, application/vnd.oci.empty.v1+json for every Sigstore
//     bundle) and the manifest's annotations;
//   - the `artifactType` query filters the list, and the answer then says
//     `OCI-Filters-Applied: artifactType`;
//   - an unknown repository lists no referrers (200, empty index) instead of 404, which a client
//     would take for "no referrers API";
//   - a manifest PUT with a `subject` answers with the `OCI-Subject` header.
//
// Manifests live in memory (lost when it stops); blobs too, or in --disk DIR. Every request is
// logged to stderr. Built by hack/testbin.sh (target referrers-registry), started by hack/platform.
//
//	referrers-registry --addr 127.0.0.1:5000 [--disk DIR]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/registry"
)

const ociIndex = "application/vnd.oci.image.index.v1+json"

func main() {
	addr := flag.String("addr", "127.0.0.1:5000", "address to listen on")
	disk := flag.String("disk", "", "keep blobs in this directory (default: in memory)")
	flag.Parse()

	logger := log.New(os.Stderr, "", log.LstdFlags)
	// pkg/registry logs each request it serves; the calls this wrapper makes on its own
	// (internal=1) are left out, so the log holds one line per client request.
	quiet := log.New(dropInternal{os.Stderr}, "", log.LstdFlags)
	opts := []registry.Option{registry.WithReferrersSupport(true), registry.Logger(quiet)}
	if *disk != "" {
		if err := os.MkdirAll(*disk, 0o755); err != nil {
			logger.Fatal(err)
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*disk)))
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Fatal(err)
	}
	logger.Printf("referrers-registry serving on %s (blobs: %s)", ln.Addr(), orMemory(*disk))
	logger.Fatal(http.Serve(ln, &server{inner: registry.New(opts...), log: logger}))
}

type dropInternal struct{ w io.Writer }

func (d dropInternal) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(internal)) {
		return len(p), nil
	}
	return d.w.Write(p)
}

const internal = "?internal=1"

func orMemory(dir string) string {
	if dir == "" {
		return "memory"
	}
	return dir
}

type server struct {
	inner http.Handler
	log   *log.Logger
}

// route splits /v2/<repo>/<kind>/<ref> into repo and kind ("" when it does not match).
func route(path string) (repo, kind string) {
	elems := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	if !strings.HasPrefix(path, "/v2/") || len(elems) < 3 {
		return "", ""
	}
	n := len(elems)
	return strings.Join(elems[:n-2], "/"), elems[n-2]
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	repo, kind := route(r.URL.Path)
	switch {
	case kind == "referrers" && r.Method == http.MethodGet:
		s.referrers(w, r, repo)
	case kind == "manifests" && r.Method == http.MethodPut:
		s.putManifest(w, r)
	default:
		s.inner.ServeHTTP(w, r)
	}
}

// call runs one request through pkg/registry and returns its recorded answer.
func (s *server) call(method, path string, header http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	s.inner.ServeHTTP(rec, req)
	return rec
}

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

func (s *server) referrers(w http.ResponseWriter, r *http.Request, repo string) {
	rec := s.call(http.MethodGet, r.URL.Path+internal, r.Header, nil)
	list := index{SchemaVersion: 2, MediaType: ociIndex, Manifests: []descriptor{}}
	switch rec.Code {
	case http.StatusOK:
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
			http.Error(w, "referrers: "+err.Error(), http.StatusInternalServerError)
			return
		}
	case http.StatusNotFound: // NAME_UNKNOWN: a repository with nothing in it has no referrers
	default:
		copyResponse(w, rec)
		return
	}
	want := r.URL.Query().Get("artifactType")
	kept := []descriptor{}
	for _, d := range list.Manifests {
		m := s.call(http.MethodGet, "/v2/"+repo+"/manifests/"+d.Digest+internal, nil, nil)
		var mf struct {
			ArtifactType string                     `json:"artifactType"`
			Config       struct{ MediaType string } `json:"config"`
			Annotations  map[string]string          `json:"annotations"`
		}
		if m.Code != http.StatusOK || json.Unmarshal(m.Body.Bytes(), &mf) != nil {
			continue // deleted since, or not JSON
		}
		d.ArtifactType = mf.ArtifactType
		if d.ArtifactType == "" {
			d.ArtifactType = mf.Config.MediaType
		}
		d.Annotations = mf.Annotations
		if want == "" || d.ArtifactType == want {
			kept = append(kept, d)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Digest < kept[j].Digest })
	list.Manifests = kept
	body, _ := json.Marshal(list)
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", ociIndex)
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	s.log.Printf("%s %s (%d referrers)", r.Method, r.URL, len(kept))
}

func (s *server) putManifest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec := s.call(http.MethodPut, r.URL.Path, r.Header, body)
	var mf struct {
		Subject *struct{ Digest string } `json:"subject"`
	}
	if rec.Code == http.StatusCreated && json.Unmarshal(body, &mf) == nil && mf.Subject != nil {
		w.Header().Set("OCI-Subject", mf.Subject.Digest)
	}
	copyResponse(w, rec)
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}
