// Command manager runs the ksm-scale-operator controller manager.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
	"github.com/ksmscale/ksm-scale-operator/internal/metricsauth"
	"github.com/ksmscale/ksm-scale-operator/internal/version"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr, probeAddr, pprofAddr, leaderNamespace, ksmRole, ksmNamespaces string
		leaderElect, secureMetrics, enableHTTP2, showVersion, verifyHandover       bool
		verifyTimeout                                                              time.Duration
	)
	flag.BoolVar(&showVersion, "version", false, "Print the version, git revision and Go version, and exit.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the metrics endpoint; \"0\" turns it off.")
	flag.BoolVar(&secureMetrics, "metrics-secure", false,
		"Serve metrics over HTTPS, with callers authenticated and authorized by the API server (needs tokenreviews and subjectaccessreviews create).")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Allow HTTP/2 on the metrics endpoint (off by default: HTTP/2 stream resets CVE-2023-44487).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0", "Address of /debug/pprof for profiling; \"0\" (the default) turns it off.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica reconciles.")
	flag.StringVar(&leaderNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease (default: the pod's namespace; required outside a cluster).")
	flag.StringVar(&ksmRole, "ksm-cluster-role", controller.DefaultKSMClusterRole,
		"The read-only ClusterRole bound to kube-state-metrics; the operator needs 'bind' on it.")
	flag.StringVar(&ksmNamespaces, "ksm-namespaces", "monitoring",
		"Comma-separated namespaces a KSMScale may run kube-state-metrics in (its spec.namespace); \"*\" allows every namespace. "+
			"kube-state-metrics reads every Secret of the cluster, so only namespaces whose pods and ServiceAccounts are as trusted as that belong here.")
	flag.BoolVar(&verifyHandover, "verify-handover", true,
		"Give every kube-state-metrics pod a readiness gate and set it only once the pod's own metrics show the objects it must export, "+
			"so that nothing is retired before its replacement has listed the cluster. The operator then scrapes pods on their metrics port "+
			"while they take over (allow it in NetworkPolicies). Off: Ready plus the settle time, as kube-state-metrics' /readyz does not wait for its first list.")
	flag.DurationVar(&verifyTimeout, "verify-timeout", controller.DefaultVerifyTimeout,
		"How long a pod that answers but exports less than it should (it cannot list a kind, say) may wait before it takes over unverified, with a Warning. "+
			"A pod whose metrics cannot be read at all takes over after the settle time.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	// Before anything that needs a cluster, so --version works anywhere.
	if showVersion {
		fmt.Print(version.Get())
		os.Exit(0)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metricsOpts.FilterProvider = metricsauth.FilterProvider
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "ksm-scale-operator.monitor.example.com",
		LeaderElectionNamespace: leaderNamespace,
		// The manager stops at once when it loses the lease, so two
		// replicas never write at the same time.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controller.CacheOptions(),
	})
	if err != nil {
		setupLog.Error(err, "unable to create manager")
		os.Exit(1)
	}

	ctx := ctrl.SetupSignalHandler()
	if verifyTimeout <= 0 {
		setupLog.Error(fmt.Errorf("--verify-timeout must be positive, got %s", verifyTimeout), "bad flag")
		os.Exit(2)
	}
	setupOpts := []controller.Option{controller.VerifyHandover(verifyHandover, verifyTimeout)}
	if ksmNamespaces != "*" {
		setupOpts = append(setupOpts, controller.AllowNamespaces(strings.Split(ksmNamespaces, ",")...))
	}
	if err := controller.Setup(ctx, mgr, ksmRole, setupOpts...); err != nil {
		setupLog.Error(err, "unable to set up the KSMScale controller")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}

	v := version.Get()
	setupLog.Info("starting manager", "version", v.Version, "revision", v.Revision, "goVersion", v.GoVersion)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "manager stopped with an error")
		os.Exit(1)
	}
}
