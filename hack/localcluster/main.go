// Command localcluster starts, inspects and stops a local control plane with
// kwok nodes that outlives the command (see test/localcluster), for running
// the operator and kubectl against by hand.
//
//	localcluster up     [--nodes N] [--dir DIR] [--bin BIN] [--external-kubelet-label KEY[=VALUE]]
//	localcluster status [--dir DIR]
//	localcluster down   [--dir DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ksmscale/ksm-scale-operator/test/localcluster"
)

const usage = `usage: localcluster COMMAND [flags]

commands:
  up      start a cluster in the background and wait until its nodes are Ready
  status  show the cluster's processes and health (exit 1 when unhealthy)
  down    stop the cluster and remove its state directory

run "localcluster COMMAND -h" for the flags of a command
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "up":
		err = up(ctx, args)
	case "status":
		err = status(ctx, args)
	case "down":
		err = down(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "localcluster: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		// Errors from the library already name it.
		msg := err.Error()
		if !strings.HasPrefix(msg, "localcluster: ") {
			msg = "localcluster: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

// newFlags returns a flag set with --dir, which every command takes.
func newFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	dir := fs.String("dir", ".local/cluster", "state directory: etcd data, certificates, logs, pids, kubeconfig")
	return fs, dir
}

func up(ctx context.Context, args []string) error {
	fs, dir := newFlags("up")
	nodes := fs.Int("nodes", 50, "number of kwok nodes")
	bin := fs.String("bin", "bin", "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and kwok-stages/")
	external := fs.String("external-kubelet-label", "", "pods with this label (KEY or KEY=VALUE) are left to another kubelet (hack/ksmkubelet) instead of kwok; empty: kwok simulates every pod")
	_ = fs.Parse(args)

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	procs, err := localcluster.Processes(abs)
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Running {
			return fmt.Errorf("a cluster is already running in %s (%s pid %d); run down first", abs, p.Name, p.PID)
		}
	}
	// Nothing runs: whatever is left is state of a dead cluster, which must
	// not leak into the new one.
	if err := localcluster.StopDir(abs); err != nil {
		return err
	}

	began := time.Now()
	c, err := localcluster.Start(ctx, localcluster.Options{
		BinDir: *bin,
		Dir:    abs,
		Nodes:  *nodes,
		Detach: true,
		// Validated by Start; kwok's stages skip these pods.
		ExternalKubeletLabel: *external,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "localcluster: "+format+"\n", args...)
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("cluster with %d Ready nodes up in %s at %s\n", *nodes, time.Since(began).Round(time.Millisecond), c.Host())
	fmt.Printf("kubeconfig: %s\n", c.Kubeconfig())
	fmt.Printf("  export KUBECONFIG=%s\n", c.Kubeconfig())
	if *external != "" {
		fmt.Printf("pods labelled %s are left to an external kubelet (hack/ksmkubelet), not kwok\n", *external)
	}
	fmt.Printf("logs: %s/*.log\n", abs)
	fmt.Printf("stop: %s down --dir %s\n", os.Args[0], abs)
	return nil
}

func status(ctx context.Context, args []string) error {
	fs, dir := newFlags("status")
	_ = fs.Parse(args)

	procs, err := localcluster.Processes(*dir)
	if err != nil {
		return err
	}
	if len(procs) == 0 {
		return fmt.Errorf("no cluster in %s", *dir)
	}
	healthy := true
	for _, p := range procs {
		state := "running"
		if !p.Running {
			state, healthy = "NOT RUNNING", false
		}
		fmt.Printf("%-24s pid %-8d %s\n", p.Name, p.PID, state)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nodes, err := localcluster.Healthy(ctx, *dir)
	if err != nil {
		return fmt.Errorf("API server not healthy: %w", err)
	}
	fmt.Printf("API server ready, %d kwok nodes Ready\n", nodes)
	if !healthy {
		return errors.New("some processes are not running")
	}
	return nil
}

func down(args []string) error {
	fs, dir := newFlags("down")
	_ = fs.Parse(args)
	if err := localcluster.StopDir(*dir); err != nil {
		return err
	}
	fmt.Printf("stopped cluster in %s\n", *dir)
	return nil
}
