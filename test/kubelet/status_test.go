package kubelet

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAME": "ksm-0", "NS": "monitoring", "EMPTY": ""}
	for in, want := range map[string]string{
		"--pod=$(POD_NAME)":               "--pod=ksm-0",
		"$(NS)/$(POD_NAME)":               "monitoring/ksm-0",
		"--x=$(MISSING)":                  "--x=$(MISSING)",
		"$$(POD_NAME)":                    "$(POD_NAME)",
		"$$$(POD_NAME)":                   "$ksm-0",
		"a$b":                             "a$b",
		"--e=$(EMPTY).":                   "--e=.",
		"unterminated $(POD_NAME":         "unterminated $(POD_NAME",
		"$()":                             "$()",
		"trailing $":                      "trailing $",
		"--metric-labels-allowlist=x=[*]": "--metric-labels-allowlist=x=[*]",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnvDownwardAPI(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ksm-1", Namespace: "kube-system", UID: "u-1", Labels: map[string]string{"app": "ksm"}},
		Spec:       corev1.PodSpec{NodeName: "kwok-node-3", ServiceAccountName: "sa"},
	}
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "IP", ValueFrom: field("status.podIP")},
		{Name: "APP", ValueFrom: field("metadata.labels['app']")},
		{Name: "BOTH", Value: "$(POD_NAMESPACE)/$(POD_NAME)@$(IP)"},
	}}
	env, vars, err := containerEnv(t.Context(), nil, pod, c, "127.65.0.9", HostIP)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"POD_NAME=ksm-1", "POD_NAMESPACE=kube-system", "NODE=kwok-node-3", "IP=127.65.0.9", "APP=ksm",
		"BOTH=kube-system/ksm-1@127.65.0.9"}
	if d := cmp.Diff(want, env); d != "" {
		t.Errorf("env (-want +got):\n%s", d)
	}
	if got := expand("--pod=$(POD_NAME) --pod-namespace=$(POD_NAMESPACE)", vars); got != "--pod=ksm-1 --pod-namespace=kube-system" {
		t.Errorf("args: %q", got)
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: "BAD", ValueFrom: field("status.phase")})
	if _, _, err := containerEnv(t.Context(), nil, pod, c, "127.65.0.9", HostIP); err == nil {
		t.Error("unsupported fieldRef accepted")
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ResourceVersion: "7"},
		Spec: corev1.PodSpec{
			NodeName:       "n",
			Containers:     []corev1.Container{{Name: ContainerName, Image: "ksm:v2"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: gate}},
		},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		}},
	}
}

// apply applies a status patch as the API server would (strategic merge).
func apply(t *testing.T, pod *corev1.Pod, patch []byte) *corev1.Pod {
	t.Helper()
	orig, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	merged, err := strategicpatch.StrategicMergePatch(orig, patch, &corev1.Pod{})
	if err != nil {
		t.Fatal(err)
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(merged, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func cond(pod *corev1.Pod, t corev1.PodConditionType) corev1.PodCondition {
	if c := findCondition(pod.Status.Conditions, t); c != nil {
		return *c
	}
	return corev1.PodCondition{}
}

func TestStatusPatch(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	obs := podObs{podIP: "127.65.0.2", hostIP: HostIP, startTime: t0}
	pod := testPod()

	// Admitted, not started: Pending with an IP, nothing ready.
	patch, err := statusPatch(pod, obs, ContainerName, t0)
	if err != nil || patch == nil {
		t.Fatalf("first patch: %s, %v", patch, err)
	}
	pod = apply(t, pod, patch)
	if pod.Status.Phase != corev1.PodPending || pod.Status.PodIP != "127.65.0.2" || cond(pod, corev1.ContainersReady).Status != corev1.ConditionFalse {
		t.Fatalf("status after admission: %+v", pod.Status)
	}
	if cond(pod, corev1.PodScheduled).Status != corev1.ConditionTrue {
		t.Fatal("PodScheduled was dropped")
	}
	if patch, _ := statusPatch(pod, obs, ContainerName, t0.Add(time.Minute)); patch != nil {
		t.Fatalf("no change, yet a patch: %s", patch)
	}

	// Running and ready: ContainersReady, but Ready waits for the gate.
	t1 := t0.Add(10 * time.Second)
	obs.everStarted = true
	obs.container = containerObs{running: true, ready: true, startedAt: t1, containerID: "test-kubelet://1"}
	patch, _ = statusPatch(pod, obs, ContainerName, t1)
	pod = apply(t, pod, patch)
	if pod.Status.Phase != corev1.PodRunning || cond(pod, corev1.ContainersReady).Status != corev1.ConditionTrue {
		t.Fatalf("running: %+v", pod.Status)
	}
	ready := cond(pod, corev1.PodReady)
	if ready.Status != corev1.ConditionFalse || ready.Reason != ReadinessGatesNotReadyReason {
		t.Fatalf("Ready before the gate: %+v", ready)
	}
	if !ready.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Ready stayed False but its lastTransitionTime moved to %s", ready.LastTransitionTime)
	}
	if patch, _ := statusPatch(pod, obs, ContainerName, t1.Add(time.Minute)); patch != nil {
		t.Fatalf("no change, yet a patch: %s", patch)
	}

	// Someone else sets the gate: Ready follows, the gate stays.
	t2 := t1.Add(5 * time.Second)
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: gate, Status: corev1.ConditionTrue, Reason: "Verified"})
	patch, _ = statusPatch(pod, obs, ContainerName, t2)
	if patch == nil {
		t.Fatal("gate turned True, no patch")
	}
	pod = apply(t, pod, patch)
	if c := cond(pod, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Time.Equal(t2) {
		t.Fatalf("Ready after the gate: %+v", c)
	}
	if c := cond(pod, gate); c.Status != corev1.ConditionTrue || c.Reason != "Verified" {
		t.Fatalf("gate condition changed: %+v", c)
	}

	// The container exits: not ready, restart counted, still Running.
	obs.container = containerObs{restarts: 1, waiting: reasonCrashLoop, containerID: "test-kubelet://1",
		lastTerminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error", StartedAt: seconds(t1), FinishedAt: seconds(t2)}}
	patch, _ = statusPatch(pod, obs, ContainerName, t2)
	pod = apply(t, pod, patch)
	cs := pod.Status.ContainerStatuses[0]
	if pod.Status.Phase != corev1.PodRunning || cs.Ready || cs.RestartCount != 1 || cs.State.Waiting == nil ||
		cs.LastTerminationState.Terminated == nil || cond(pod, corev1.PodReady).Status != corev1.ConditionFalse {
		t.Fatalf("after exit: %+v", pod.Status)
	}
	if patch, _ := statusPatch(pod, obs, ContainerName, t2.Add(time.Hour)); patch != nil {
		t.Fatalf("no change, yet a patch: %s", patch)
	}
}

// A pod without a KSM container runs nothing and must not look healthy.
func TestStatusWithoutKSMContainer(t *testing.T) {
	pod := testPod()
	pod.Spec.ReadinessGates = nil
	pod.Spec.Containers = []corev1.Container{{Name: "other"}}
	obs := podObs{podIP: "127.65.0.2", hostIP: HostIP, startTime: time.Now(),
		container: containerObs{waiting: reasonConfigError, waitingMessage: "no container"}}
	st := desiredStatus(pod, obs, ContainerName, time.Now())
	cs := st.ContainerStatuses[0]
	if cs.Ready || cs.State.Waiting == nil || cs.State.Waiting.Reason != reasonConfigError {
		t.Errorf("container status: %+v", cs)
	}
	if c := findCondition(st.Conditions, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("Ready: %+v", c)
	}
}
