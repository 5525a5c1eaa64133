package controller

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ksmscale/ksm-scale-operator/internal/ksm"
)

// podAt is a pod whose metrics port is srv's.
func podAt(t *testing.T, srv *httptest.Server) *corev1.Pod {
	t.Helper()
	host, port, err := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return &corev1.Pod{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: ksm.ContainerName,
			Ports: []corev1.ContainerPort{{Name: ksm.MetricsPortName, ContainerPort: int32(p)}}}}},
		Status: corev1.PodStatus{PodIP: host},
	}
}

// endless is an io.Reader of valid, never-ending kube_pod_info lines.
type endless struct{ n int }

func (e *endless) Read(b []byte) (int, error) {
	line := fmt.Sprintf("kube_pod_info{namespace=\"ns\",pod=\"p%d\",uid=\"u%d\"} 1\n", e.n, e.n)
	e.n++
	return copy(b, line), nil
}

// TestScrapeFaults: an endpoint that returns garbage, hangs, fails or is
// huge gives a clear error within the scrape's bounds, never a panic, a
// block or a body held in memory.
func TestScrapeFaults(t *testing.T) {
	const body = "# HELP kube_pod_info x\n# TYPE kube_pod_info gauge\n" +
		"kube_pod_info{namespace=\"a\",pod=\"p\",uid=\"1\"} 1\nkube_pod_info{namespace=\"a\",pod=\"q\",uid=\"2\"} 1\n" +
		"kube_node_info{node=\"n\"} 1\nkube_pod_status_phase{pod=\"p\",phase=\"Running\"} 1\n"
	// wait blocks a handler until the scraper gives up.
	wait := func(r *http.Request) { <-r.Context().Done() }
	handlers := map[string]http.HandlerFunc{
		"ok": func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) },
		"garbage": func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "kube_pod_info{namespace=\"a\" 1\n\x00\x01<html>")
		},
		"hangs": func(_ http.ResponseWriter, r *http.Request) { wait(r) },
		"stalls mid-body": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, body)
			w.(http.Flusher).Flush()
			wait(r)
		},
		"fails": func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) },
		"huge":  func(w http.ResponseWriter, _ *http.Request) { io.Copy(w, &endless{}) },
	}
	v := newVerifier(true, time.Minute)
	v.scrapeTimeout, v.maxBytes = 2*time.Second, 8<<20
	for name, h := range handlers {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			start := time.Now()
			counts, err := v.scrape(context.Background(), podAt(t, srv))
			took := time.Since(start)
			if took > v.scrapeTimeout+5*time.Second {
				t.Errorf("scrape took %s, bound %s", took, v.scrapeTimeout)
			}
			if name == "ok" {
				if err != nil || counts[ksm.FamilyPods] != 2 || counts[ksm.FamilyNodes] != 1 || len(counts) != 2 {
					t.Errorf("scrape = %v, %v; want 2 pods and 1 node, nothing else", counts, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("scrape of an endpoint that %s succeeded: %v", name, counts)
			}
			if !strings.Contains(err.Error(), "/metrics") {
				t.Errorf("error %q does not name the endpoint", err)
			}
			t.Logf("%s: %v (after %s)", name, err, took.Round(time.Millisecond))
		})
	}
	if _, err := v.scrape(context.Background(), &corev1.Pod{}); err == nil || !strings.Contains(err.Error(), "no IP") {
		t.Errorf("scrape of a pod without an IP: %v", err)
	}
}
