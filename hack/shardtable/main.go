// Command shardtable prints, for a KSMScale on a cluster, how real
// kube-state-metrics processes started with each shard pod's own arguments
// split the cluster's objects, and checks that the split is exact. See
// package test/e2e/shardcheck.
//
// Usage:
//
//	go run ./hack/shardtable --kubeconfig .local/kubeconfig --ksmscale NAME [--bin bin] [--timeout 120s]
//
// It exits 0 when every check passes, 1 when one fails, 2 when it could not
// run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ksmscale/ksm-scale-operator/test/e2e/shardcheck"
)

func main() { os.Exit(run()) }

func run() int {
	var o shardcheck.Options
	flag.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster (default $KUBECONFIG)")
	flag.StringVar(&o.Name, "ksmscale", "", "name of the KSMScale (required)")
	flag.StringVar(&o.Bin, "bin", "bin", "directory holding kube-state-metrics, or the binary itself")
	flag.DurationVar(&o.Timeout, "timeout", 120*time.Second, "how long to wait for all kube-state-metrics to start and settle")
	flag.StringVar(&o.LogDir, "logdir", "", "where the kube-state-metrics logs go (default: a temporary directory, removed when every check passes)")
	flag.BoolVar(&o.Verbose, "v", false, "print each process's command line and the differing series")
	flag.Parse()
	// Only the controller-runtime client is used; its log has nothing to say here.
	ctrllog.SetLogger(logr.Discard())
	if o.Name == "" || o.Kubeconfig == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: shardtable --kubeconfig FILE --ksmscale NAME [--bin DIR] [--timeout 120s] [--logdir DIR] [-v]")
		return shardcheck.ExitError
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := shardcheck.Run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "shardtable:", err)
	}
	return code
}
