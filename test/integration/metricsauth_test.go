package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/ksmscale/ksm-scale-operator/internal/metricsauth"
	"github.com/ksmscale/ksm-scale-operator/test/proc"
)

// TestSecureMetricsServeOnlyAuthorizedScrapers runs the metrics server the
// way cmd/main.go does with --metrics-secure, as the operator's own
// ServiceAccount with the shipped config/rbac/metrics_auth_role.yaml, and
// scrapes it over HTTPS with real ServiceAccount tokens: one bound to the
// shipped metrics-reader role, one without it.
func TestSecureMetricsServeOnlyAuthorizedScrapers(t *testing.T) {
	applyManifest(t, "../../config/rbac/metrics_auth_role.yaml")
	applyManifest(t, "../../config/rbac/metrics_reader_role.yaml")
	const ns = "metrics-scrapers"
	createNamespace(t, ns)
	cs := kubernetes.NewForConfigOrDie(restCfg)
	token := func(sa string) string {
		t.Helper()
		if err := k8s.Create(testCtx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(testCtx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	prometheus, nobody := token("prometheus"), token("nobody")
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "metrics-scrapers-prometheus"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ksm-scale-operator-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "prometheus"}},
	}
	if err := k8s.Create(testCtx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), binding) })

	// The server, as the operator: only the shipped roles let it review tokens.
	ports, err := proc.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	httpClient, err := rest.HTTPClientFor(operatorCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metricsserver.NewServer(metricsserver.Options{BindAddress: addr, SecureServing: true,
		FilterProvider: metricsauth.FilterProvider}, operatorCfg, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx)
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	// The serving certificate is self-signed, as in a cluster without
	// cert-manager; Prometheus is configured with insecureSkipVerify.
	scraper := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	scrape := func(bearer string) (int, string, error) {
		req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := scraper.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	eventually(t, 60*time.Second, "the metrics server answers", func() error {
		_, _, err := scrape("")
		return err
	})

	for _, tc := range []struct {
		name, bearer string
		want         int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"a token the API server did not issue", "not-a-token", http.StatusUnauthorized},
		{"a ServiceAccount without the reader role", nobody, http.StatusForbidden},
		{"a ServiceAccount bound to the reader role", prometheus, http.StatusOK},
	} {
		code, body, err := scrape(tc.bearer)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if code != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, code, strings.TrimSpace(body), tc.want)
		}
		if hasMetrics := strings.Contains(body, "# TYPE "); hasMetrics != (tc.want == http.StatusOK) {
			t.Errorf("%s: metrics in the body: %v, want %v", tc.name, hasMetrics, tc.want == http.StatusOK)
		}
	}
}

// applyManifest creates every object of a multi-document YAML file and
// deletes them when the test ends.
func applyManifest(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := k8s.Create(testCtx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: create %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
		t.Cleanup(func() {
			_ = k8s.Delete(context.Background(), u, client.PropagationPolicy(metav1.DeletePropagationBackground))
		})
	}
}
