// Package integration runs the operator against a real kube-apiserver and
// etcd (controller-runtime's envtest with the binaries built into bin/). No
// kubelet runs, so the tests play kubelet and Deployment controller where
// they need pods to become Ready.
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/ksmscale/ksm-scale-operator/api/v1alpha1"
	"github.com/ksmscale/ksm-scale-operator/internal/controller"
	"github.com/ksmscale/ksm-scale-operator/test/wait"
)

var (
	scheme = runtime.NewScheme()
	// k8s is a direct (uncached) client for the tests' own reads and writes.
	k8s     client.Client
	restCfg *rest.Config
	// operatorCfg impersonates the operator's ServiceAccount.
	operatorCfg *rest.Config
	// testCtx lives as long as the suite.
	testCtx context.Context
	// operatorCache is the in-process operator's informer cache.
	operatorCache cache.Cache
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, _ := filepath.Abs("../..")
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		fmt.Fprintf(os.Stderr, "integration tests need kube-apiserver and etcd in %s: run hack/build-tools.sh (or make test)\n", assets)
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))

	env := &envtest.Environment{
		CRDDirectoryPaths:        []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing:    true,
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		return 1
	}
	// Stop the API server and etcd (by their PIDs, inside envtest) whatever happens.
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
		}
	}()
	restCfg = cfg

	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	testCtx = ctx
	// The operator runs with exactly the permissions config/rbac grants it:
	// a missing rule fails the suite, not a production install.
	opCfg, err := operatorIdentity(ctx, cfg, root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "operator identity: %v\n", err)
		return 1
	}
	operatorCfg = opCfg
	if err := startManager(ctx, opCfg); err != nil {
		fmt.Fprintf(os.Stderr, "start manager: %v\n", err)
		return 1
	}
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE_LOGS") != "" {
		return -1
	}
	return 1
}

// operatorIdentity installs the generated manager ClusterRole and the
// kube-state-metrics ClusterRole from config/rbac, binds the first to the
// operator's ServiceAccount and returns a config that impersonates it.
func operatorIdentity(ctx context.Context, cfg *rest.Config, root string) (*rest.Config, error) {
	const ns, sa = "ksm-scale-operator-system", "ksm-scale-operator"
	var roles []string
	for _, f := range []string{"role.yaml", "kube_state_metrics_role.yaml"} {
		b, err := os.ReadFile(filepath.Join(root, "config", "rbac", f))
		if err != nil {
			return nil, err
		}
		role := &rbacv1.ClusterRole{}
		if err := yaml.Unmarshal(b, role); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if err := k8s.Create(ctx, role); err != nil {
			return nil, err
		}
		roles = append(roles, role.Name)
	}
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return nil, err
	}
	if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}); err != nil {
		return nil, err
	}
	if err := k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ksm-scale-operator-manager"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roles[0]},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}},
	}); err != nil {
		return nil, err
	}
	op := rest.CopyConfig(cfg)
	op.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa}
	return op, nil
}

// testNamespaces are the namespaces the suite's operator may run
// kube-state-metrics in (cmd/main.go's --ksm-namespaces); a test using
// another one sees its KSMScale refused with NamespaceNotAllowed.
var testNamespaces = []string{
	"monitoring", "unsharded", "created-later", "shared-ns", "auto-shards", "cache-pods",
	"metrics-scrapers", "mesh", "partial", "doomed", "move-from", "move-to", "paused",
}

// startManager runs the operator in-process the way cmd/main.go wires it.
func startManager(ctx context.Context, cfg *rest.Config) error {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache:   controller.CacheOptions(),
	})
	if err != nil {
		return err
	}
	if err := controller.Setup(ctx, mgr, controller.DefaultKSMClusterRole, controller.WrapClient(faults.wrap),
		controller.AllowNamespaces(testNamespaces...)); err != nil {
		return err
	}
	operatorCache = mgr.GetCache()
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "manager: %v\n", err)
		}
	}()
	return nil
}

// eventually polls cond every 100 ms until it returns nil or the deadline
// passes, then fails with cond's last error. Deadlines are generous: the
// machine is small and shared.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	wait.Eventually(t, 100*time.Millisecond, timeout, what, cond)
}

// createNamespace makes a namespace unless it exists. Namespaces are not
// deleted: envtest runs no namespace controller, so a deleted namespace would
// stay Terminating and refuse new pods for the rest of the suite.
func createNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(testCtx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// shardedKSMScale is a KSMScale running `shards` shards in ns with a short
// settle time, as most scenarios need.
func shardedKSMScale(name, ns string, shards, minReadySeconds int32) *v1alpha1.KSMScale {
	return &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.KSMScaleSpec{
		Namespace: ns,
		Sharding: &v1alpha1.ShardingConfig{Enabled: true, ShardCount: shards,
			Advanced: &v1alpha1.AdvancedShardingConfig{MinReadySeconds: ptr.To(minReadySeconds)}},
	}}
}

// createKSMScale creates k and deletes it when the test ends.
func createKSMScale(t *testing.T, k *v1alpha1.KSMScale) {
	t.Helper()
	if err := k8s.Create(testCtx, k); err != nil {
		t.Fatalf("create KSMScale %s: %v", k.Name, err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), &v1alpha1.KSMScale{ObjectMeta: metav1.ObjectMeta{Name: k.Name}})
	})
}

func getKSMScale(t *testing.T, name string) *v1alpha1.KSMScale {
	t.Helper()
	k := &v1alpha1.KSMScale{}
	if err := k8s.Get(testCtx, client.ObjectKey{Name: name}, k); err != nil {
		t.Fatalf("get KSMScale %s: %v", name, err)
	}
	return k
}

// clientDryRun makes a create run every admission and validation step
// without storing the object.
var clientDryRun = client.CreateOptions{DryRun: []string{metav1.DryRunAll}}
