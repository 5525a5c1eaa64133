// Command ksmkubelet plays kubelet for the kube-state-metrics (KSM) pods of a
// local cluster (hack/cluster.sh, make demo): for every pod matching
// --selector it runs the real bin/kube-state-metrics with the pod's own
// arguments on the pod's own loopback IP, and reports the pod's status as a
// kubelet would, probes and readiness gates included (see test/kubelet).
// The operator can then scrape each pod's /metrics and verify its
// hand-over, as on a real cluster.
//
// Start the cluster with `localcluster up --external-kubelet-label
// ksmscale.example.com` so that kwok leaves these pods alone.
//
// It runs until SIGINT or SIGTERM, then stops every KSM process it started
// (by PID) and exits; the processes also die with it if it is killed
// outright. It writes nothing but logs, to stderr and to --dir (one log per
// pod, and the pods' kubeconfigs).
//
//	ksmkubelet [--kubeconfig FILE] [--bin DIR] [--dir DIR] [--selector LABELS] [--ip-range CIDR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ksmscale/ksm-scale-operator/test/kubelet"
)

// defaultIPRange is apart from both the local cluster's pod CIDR
// (127.64.0.0/16, kwok's pods) and test/kubelet's default (127.65.0.0/16,
// which e2e suites running on the same machine use), so the demo's KSM
// processes never compete with a test's for an address.
const defaultIPRange = "127.66.0.0/16"

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC | log.Lmsgprefix)
	log.SetPrefix("ksmkubelet: ")
	if err := run(); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run() error {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the cluster (default $KUBECONFIG)")
	bin := flag.String("bin", "bin", "directory holding kube-state-metrics")
	dir := flag.String("dir", ".local/ksmkubelet", "where the per-pod KSM logs and kubeconfigs go")
	selector := flag.String("selector", "ksmscale.example.com", "label selector of the pods to run, in every namespace")
	ipRange := flag.String("ip-range", defaultIPRange, "loopback prefix (inside 127.0.0.0/8) the pod IPs come from")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *kubeconfig == "" {
		return errors.New("--kubeconfig (or $KUBECONFIG) is required")
	}
	sel, err := labels.Parse(*selector)
	if err != nil {
		return fmt.Errorf("--selector: %w", err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	k, err := kubelet.Start(ctx, kubelet.Options{
		Config:   cfg,
		BinDir:   *bin,
		Dir:      *dir,
		Selector: sel,
		IPRange:  *ipRange,
		Logf:     log.Printf,
	})
	if err != nil {
		return err
	}
	// hack/cluster.sh waits for this line.
	log.Printf("running; KSM logs in %s; stop with SIGINT or SIGTERM", *dir)
	<-ctx.Done()
	stop() // a second signal now takes the default action: die at once
	log.Print("stopping every kube-state-metrics process")
	if err := k.Stop(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	log.Print("stopped")
	return nil
}
