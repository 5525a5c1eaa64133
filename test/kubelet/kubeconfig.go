package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
)

// tokenExpiration is how long a pod's token is valid: longer than any test
// or benchmark runs, since the token is requested once per pod.
const tokenExpiration = 24 * 3600

// serviceAccountKubeconfig writes a kubeconfig that authenticates as pod's
// own ServiceAccount with a token bound to the pod, the credentials kubelet
// would mount into it: KSM then has exactly the permissions the operator
// (or the test) bound to that account, and the token dies with the pod. The
// token sits in a file of its own that the kubeconfig names, so it could be
// refreshed in place (client-go rereads token files).
func (k *Kubelet) serviceAccountKubeconfig(ctx context.Context, pod *corev1.Pod) (string, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](tokenExpiration),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for serviceaccount %s/%s: %w", pod.Namespace, sa, err)
	}
	base := filepath.Join(k.dir, "kubeconfigs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, shortUID(pod)))
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(base+".token", []byte(tr.Status.Token), 0o600); err != nil {
		return "", err
	}
	ca := k.o.Config.CAData
	if len(ca) == 0 && k.o.Config.CAFile != "" {
		if ca, err = os.ReadFile(k.o.Config.CAFile); err != nil {
			return "", err
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: k.o.Config.Host, CertificateAuthorityData: ca}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{TokenFile: base + ".token"}
	cfg.Contexts["pod"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa, Namespace: pod.Namespace}
	cfg.CurrentContext = "pod"
	path := base + ".kubeconfig"
	return path, clientcmd.WriteToFile(*cfg, path)
}

// shortUID keeps file names of same-named pods (a StatefulSet's) apart.
func shortUID(pod *corev1.Pod) string {
	uid := string(pod.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return uid
}
