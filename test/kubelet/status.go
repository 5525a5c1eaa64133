package kubelet

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Condition reasons, as kubelet writes them.
const (
	ContainersNotReadyReason     = "ContainersNotReady"
	ReadinessGatesNotReadyReason = "ReadinessGatesNotReady"
)

// ownedConditions are the pod conditions this kubelet writes. Every other
// condition (PodScheduled, DisruptionTarget, readiness gates set by an
// operator) belongs to someone else and is never written.
var ownedConditions = []corev1.PodConditionType{
	corev1.PodReadyToStartContainers,
	corev1.PodInitialized,
	corev1.ContainersReady,
	corev1.PodReady,
}

// containerObs is what the kubelet knows about the container it runs.
type containerObs struct {
	// running: a process is up.
	running   bool
	startedAt time.Time
	ready     bool
	restarts  int32
	// containerID names the current (or last) process.
	containerID string
	// waiting is the reason it does not run (ContainerCreating,
	// CrashLoopBackOff, CreateContainerConfigError), with a message.
	waiting, waitingMessage string
	lastTerminated          *corev1.ContainerStateTerminated
}

// podObs is everything the status is derived from besides the pod itself.
type podObs struct {
	podIP, hostIP string
	// startTime is when the kubelet took the pod on.
	startTime time.Time
	// everStarted: the container has been started at least once; the pod
	// is Running from then on (restartPolicy Always).
	everStarted bool
	container   containerObs
}

// seconds drops what the API does not keep of a time, so that what is
// written compares equal to what is read back.
func seconds(t time.Time) metav1.Time { return metav1.NewTime(time.Unix(t.Unix(), 0)) }

// statusPatch returns the strategic merge patch that brings pod's status to
// what obs says, or nil when the status already says it (so a steady pod
// causes no writes). Only the fields a kubelet owns are in the patch, and
// conditions are merged by type, so conditions of others (readiness gates)
// are never overwritten. The patch carries the pod's resourceVersion: if
// the pod changed since it was read (a gate flipped), the write conflicts
// instead of publishing a Ready computed from stale gates. A condition's
// lastTransitionTime moves only when its status flips.
func statusPatch(pod *corev1.Pod, obs podObs, ksmContainer string, now time.Time) ([]byte, error) {
	want := desiredStatus(pod, obs, ksmContainer, now)
	cur := &pod.Status
	same := cur.Phase == want.Phase &&
		cur.PodIP == want.PodIP &&
		cur.HostIP == want.HostIP &&
		equality.Semantic.DeepEqual(cur.PodIPs, want.PodIPs) &&
		equality.Semantic.DeepEqual(cur.HostIPs, want.HostIPs) &&
		equality.Semantic.DeepEqual(cur.StartTime, want.StartTime) &&
		equality.Semantic.DeepEqual(cur.ContainerStatuses, want.ContainerStatuses)
	for _, c := range want.Conditions {
		old := findCondition(cur.Conditions, c.Type)
		if old == nil || !equality.Semantic.DeepEqual(*old, c) {
			same = false
		}
	}
	if same {
		return nil, nil
	}
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": pod.ResourceVersion},
		"status": map[string]any{
			"phase":             want.Phase,
			"podIP":             want.PodIP,
			"podIPs":            want.PodIPs,
			"hostIP":            want.HostIP,
			"hostIPs":           want.HostIPs,
			"startTime":         want.StartTime,
			"conditions":        conditionPatches(want.Conditions),
			"containerStatuses": want.ContainerStatuses,
		},
	})
}

// conditionPatches renders conditions for a strategic merge patch, which
// merges each into the condition of its type: an empty reason or message
// must be an explicit null, or the old one would survive.
func conditionPatches(conds []corev1.PodCondition) []map[string]any {
	out := make([]map[string]any, 0, len(conds))
	orNull := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	for _, c := range conds {
		out = append(out, map[string]any{
			"type":               c.Type,
			"status":             c.Status,
			"lastTransitionTime": c.LastTransitionTime,
			"reason":             orNull(c.Reason),
			"message":            orNull(c.Message),
		})
	}
	return out
}

// desiredStatus is the kubelet-owned part of pod's status.
func desiredStatus(pod *corev1.Pod, obs podObs, ksmContainer string, now time.Time) corev1.PodStatus {
	start := seconds(obs.startTime)
	if pod.Status.StartTime != nil {
		start = *pod.Status.StartTime
	}
	st := corev1.PodStatus{
		Phase:     corev1.PodPending,
		PodIP:     obs.podIP,
		PodIPs:    []corev1.PodIP{{IP: obs.podIP}},
		HostIP:    obs.hostIP,
		HostIPs:   []corev1.HostIP{{IP: obs.hostIP}},
		StartTime: &start,
	}
	if obs.everStarted {
		st.Phase = corev1.PodRunning
	}

	// Without a KSM container nothing runs, and every container reports
	// why (the runner's waiting reason) instead of passing for healthy.
	runsKSM := false
	for _, c := range pod.Spec.Containers {
		runsKSM = runsKSM || c.Name == ksmContainer
	}
	var unready []string
	for _, c := range pod.Spec.Containers {
		cs := containerStatus(c, obs.container, c.Name == ksmContainer || !runsKSM, start)
		if !cs.Ready {
			unready = append(unready, c.Name)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}

	cond := func(t corev1.PodConditionType, ok bool, reason, message string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: message}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		c.LastTransitionTime = seconds(now)
		if old := findCondition(pod.Status.Conditions, t); old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		return c
	}
	containersReady := len(unready) == 0
	containersMsg := ""
	if !containersReady {
		containersMsg = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	gatesMsg := readinessGatesMessage(pod)
	ready := containersReady && gatesMsg == ""
	readyReason, readyMsg := ContainersNotReadyReason, containersMsg
	if containersReady {
		readyReason, readyMsg = ReadinessGatesNotReadyReason, gatesMsg
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, true, "", ""),
		cond(corev1.PodInitialized, true, "", ""),
		cond(corev1.ContainersReady, containersReady, ContainersNotReadyReason, containersMsg),
		cond(corev1.PodReady, ready, readyReason, readyMsg),
	}
	return st
}

// containerStatus reports c. The KSM container (ours) is what obs says; any
// other container (a sidecar admission added) is not run, and is reported
// running and ready from the pod's start, as kwok would, so that it does not
// hold the pod back.
func containerStatus(c corev1.Container, obs containerObs, ours bool, podStart metav1.Time) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	if !ours {
		cs.Ready, cs.Started = true, ptr.To(true)
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: podStart}
		return cs
	}
	cs.RestartCount = obs.restarts
	cs.ContainerID = obs.containerID
	cs.Started = ptr.To(obs.running)
	cs.Ready = obs.running && obs.ready
	if obs.lastTerminated != nil {
		cs.LastTerminationState.Terminated = obs.lastTerminated.DeepCopy()
	}
	if obs.running {
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: seconds(obs.startedAt)}
	} else {
		reason := obs.waiting
		if reason == "" {
			reason = "ContainerCreating"
		}
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: obs.waitingMessage}
	}
	return cs
}

// readinessGatesMessage is empty when every readiness gate's condition is
// True, and otherwise says which is not, in kubelet's words.
func readinessGatesMessage(pod *corev1.Pod) string {
	for _, g := range pod.Spec.ReadinessGates {
		c := findCondition(pod.Status.Conditions, g.ConditionType)
		if c == nil {
			return fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType)
		}
		if c.Status != corev1.ConditionTrue {
			return fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %s", g.ConditionType, c.Status)
		}
	}
	return ""
}

func findCondition(conds []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}
