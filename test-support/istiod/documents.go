package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/schema/collections"
	"istio.io/istio/pkg/webhooks/validation/server"
)

// document is one object of the Istio YAML given to us, checked and converted.
type document struct {
	index  int // 1-based position in its YAML stream, for messages
	gvk    config.GroupVersionKind
	name   string
	ns     string
	config config.Config
}

func (d document) String() string {
	return fmt.Sprintf("%s %s/%s", d.gvk.Kind, d.ns, d.name)
}

// header is the part of a Kubernetes object that says what and where it is.
type header struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// validator checks documents with istiod's own validating admission webhook, called
// in-process, so a rejection carries exactly the message kubectl would show from istiod.
type validator struct {
	webhook *http.ServeMux
}

func newValidator() (*validator, error) {
	mux := http.NewServeMux()
	if _, err := server.New(server.Options{
		Schemas:      collections.PilotGatewayAPI(),
		DomainSuffix: constants.DefaultClusterLocalDomain,
		Mux:          mux,
	}); err != nil {
		return nil, fmt.Errorf("setting up istiod's validation webhook: %v", err)
	}
	return &validator{webhook: mux}, nil
}

// splitYAML yields each non-empty document of a YAML stream as JSON, with its 1-based index.
func splitYAML(text string, each func(index int, doc []byte) error) error {
	r := kubeyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(text)))
	for index := 1; ; index++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %v", index, err)
		}
		doc, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return fmt.Errorf("document %d: not YAML: %v", index, err)
		}
		if trimmed := bytes.TrimSpace(doc); len(trimmed) == 0 || string(trimmed) == "null" {
			continue
		}
		if err := each(index, doc); err != nil {
			return err
		}
	}
}

// locate reads a document's kind, name and namespace, defaulting the namespace the way
// kubectl does, and returns the document with that namespace filled in.
func locate(index int, doc []byte) (header, []byte, error) {
	var h header
	if err := json.Unmarshal(doc, &h); err != nil {
		return h, nil, fmt.Errorf("document %d: not a Kubernetes object: %v", index, err)
	}
	if h.Kind == "" || h.APIVersion == "" {
		return h, nil, fmt.Errorf("document %d: apiVersion and kind are required", index)
	}
	if h.Metadata.Name == "" {
		return h, nil, fmt.Errorf("document %d (%s): metadata.name is required", index, h.Kind)
	}
	if h.Metadata.Namespace != "" {
		return h, doc, nil
	}
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil {
		return h, nil, fmt.Errorf("document %d: not a Kubernetes object: %v", index, err)
	}
	meta, ok := obj["metadata"].(map[string]any)
	if !ok {
		return h, nil, fmt.Errorf("document %d (%s): metadata is not a mapping", index, h.Kind)
	}
	h.Metadata.Namespace = metav1.NamespaceDefault
	meta["namespace"] = h.Metadata.Namespace
	out, err := json.Marshal(obj)
	if err != nil {
		return h, nil, fmt.Errorf("document %d: %v", index, err)
	}
	return h, out, nil
}

// parse checks every document of an Istio YAML stream and converts it; it fails on the
// first document istiod would reject, naming it.
func (v *validator) parse(text string) ([]document, error) {
	var docs []document
	err := splitYAML(text, func(index int, raw []byte) error {
		h, doc, err := locate(index, raw)
		if err != nil {
			return err
		}
		where := fmt.Sprintf("document %d (%s %s/%s)", index, h.Kind, h.Metadata.Namespace, h.Metadata.Name)
		if err := v.admit(h, doc); err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		configs, others, err := crd.ParseInputs(string(doc))
		if err != nil {
			return fmt.Errorf("%s: %v", where, err)
		}
		if len(others) > 0 || len(configs) != 1 {
			return fmt.Errorf("%s: not an Istio configuration kind istiod reads", where)
		}
		c := configs[0]
		docs = append(docs, document{index: index, gvk: c.GroupVersionKind, name: c.Name, ns: c.Namespace, config: c})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return docs, nil
}

// refs reads what each document names, for deletion: kubectl deletes by kind, name and
// namespace alone, so the specs are not checked.
func refs(text string) ([]document, error) {
	var docs []document
	err := splitYAML(text, func(index int, raw []byte) error {
		h, _, err := locate(index, raw)
		if err != nil {
			return err
		}
		gv, err := schemaGroupVersion(h.APIVersion)
		if err != nil {
			return fmt.Errorf("document %d (%s): %v", index, h.Kind, err)
		}
		s, ok := collections.PilotGatewayAPI().FindByGroupVersionAliasesKind(config.GroupVersionKind{
			Group: gv.group, Version: gv.version, Kind: h.Kind,
		})
		if !ok {
			return fmt.Errorf("document %d: unrecognized type %s %s", index, h.APIVersion, h.Kind)
		}
		docs = append(docs, document{
			index: index, gvk: s.GroupVersionKind(), name: h.Metadata.Name, ns: h.Metadata.Namespace,
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return docs, nil
}

type groupVersion struct{ group, version string }

func schemaGroupVersion(apiVersion string) (groupVersion, error) {
	group, version, ok := strings.Cut(apiVersion, "/")
	if !ok || group == "" || version == "" {
		return groupVersion{}, fmt.Errorf("apiVersion %q is not GROUP/VERSION", apiVersion)
	}
	return groupVersion{group, version}, nil
}

// admit sends one document through istiod's validation webhook as a CREATE.
func (v *validator) admit(h header, doc []byte) error {
	gv, err := schemaGroupVersion(h.APIVersion)
	if err != nil {
		return err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "istiod-test",
			Kind:      metav1.GroupVersionKind{Group: gv.group, Version: gv.version, Kind: h.Kind},
			Name:      h.Metadata.Name,
			Namespace: h.Metadata.Namespace,
			Operation: admissionv1.Create,
		},
	}
	review.Request.Object.Raw = doc
	body, err := json.Marshal(review)
	if err != nil {
		return fmt.Errorf("encoding the admission review: %v", err)
	}
	req := httptest.NewRequest(http.MethodPost, "/validate", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	v.webhook.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return fmt.Errorf("istiod's validation webhook answered %d: %s", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	var answer admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &answer); err != nil {
		return fmt.Errorf("decoding istiod's validation answer: %v", err)
	}
	if answer.Response == nil {
		return errors.New("istiod's validation webhook gave no answer")
	}
	if !answer.Response.Allowed {
		msg := "rejected"
		if answer.Response.Result != nil && answer.Response.Result.Message != "" {
			msg = answer.Response.Result.Message
		}
		return errors.New(msg)
	}
	return nil
}
