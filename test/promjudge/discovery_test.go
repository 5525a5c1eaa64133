package promjudge

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodTargets checks the targets and meta labels podDiscovery hands
// Prometheus against what its pod role would give: one target per
// declared port with the port's meta labels, sanitized label names with
// their labelpresent twins, and nothing for a pod without an IP.
func TestPodTargets(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app.kubernetes.io/name": "kube-state-metrics", "shard-id": "1"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{
			Name: "kube-state-metrics", Image: "img",
			Ports: []corev1.ContainerPort{{Name: "http-metrics", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "telemetry", ContainerPort: 8081, Protocol: corev1.ProtocolTCP}},
		}}},
	}
	if got := podTargets(pod); got != nil {
		t.Errorf("a pod without an IP has targets: %v", got)
	}
	pod.Status = corev1.PodStatus{PodIP: "127.65.0.3", HostIP: "127.0.0.1", Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	got := podTargets(pod)
	if len(got) != 2 {
		t.Fatalf("%d targets, want one per port: %v", len(got), got)
	}
	for i, want := range []struct{ addr, port, number string }{{"127.65.0.3:8080", "http-metrics", "8080"}, {"127.65.0.3:8081", "telemetry", "8081"}} {
		g := got[i]
		l := g.Labels
		if g.Targets[0] != want.addr || l["__meta_kubernetes_pod_container_port_name"] != want.port || l["__meta_kubernetes_pod_container_port_number"] != want.number ||
			l["__meta_kubernetes_pod_container_port_protocol"] != "TCP" || l["__meta_kubernetes_pod_container_name"] != "kube-state-metrics" ||
			l["__meta_kubernetes_pod_container_init"] != "false" {
			t.Errorf("target %d: %v %v, want %s port %s", i, g.Targets, l, want.addr, want.port)
		}
		for k, v := range map[string]string{
			"__meta_kubernetes_namespace": "ns", "__meta_kubernetes_pod_name": "p", "__meta_kubernetes_pod_uid": "u1",
			"__meta_kubernetes_pod_ip": "127.65.0.3", "__meta_kubernetes_pod_ready": "true", "__meta_kubernetes_pod_phase": "Running",
			"__meta_kubernetes_pod_node_name": "n1", "__meta_kubernetes_pod_host_ip": "127.0.0.1",
			"__meta_kubernetes_pod_label_app_kubernetes_io_name": "kube-state-metrics", "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
			"__meta_kubernetes_pod_label_shard_id": "1", "__meta_kubernetes_pod_labelpresent_shard_id": "true",
		} {
			if l[k] != v {
				t.Errorf("target %d: %s=%q, want %q", i, k, l[k], v)
			}
		}
	}
}
