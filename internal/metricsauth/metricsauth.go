// Package metricsauth guards the operator's metrics endpoint when it is
// served over HTTPS (--metrics-secure): every request must carry a bearer
// token that the API server accepts (a TokenReview), and the token's user
// must be allowed "get" on the request's path as a non-resource URL (a
// SubjectAccessReview), the rule kube-rbac-proxy applies: a ClusterRole rule
// with nonResourceURLs ["/metrics"] and verbs ["get"], as in
// config/rbac/metrics_reader_role.yaml.
//
// It does what controller-runtime's metrics/filters package does with client-go
// alone. That package pulls in k8s.io/apiserver (CEL, gRPC, OpenTelemetry),
// which made the manager binary 20 MB larger and its resident memory about
// 18 MiB higher, whether or not the flag was on; see docs/benchmarks.md.
//
// Reviews are cached by a hash of what they were asked: accepted tokens for a
// minute and rejected ones for 10 s; allowed access for 5 minutes and denied
// access for 30 s. A scrape every 30 s therefore costs the API server one
// TokenReview a minute and one SubjectAccessReview every five.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long review results are reused, and how long one review may take.
const (
	AuthenticatedTTL   = time.Minute
	UnauthenticatedTTL = 10 * time.Second
	AllowedTTL         = 5 * time.Minute
	DeniedTTL          = 30 * time.Second
	ReviewTimeout      = 10 * time.Second
	// maxCached bounds each cache; an endpoint scraped by a few Prometheus
	// replicas needs a handful of entries.
	maxCached = 1024
)

// FilterProvider is a metricsserver.Options.FilterProvider: it builds the
// review clients from the manager's REST config and HTTP client.
func FilterProvider(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authorizationclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	a := New(authn.TokenReviews(), authz.SubjectAccessReviews())
	return a.Filter, nil
}

// TokenReviewer creates TokenReviews.
type TokenReviewer interface {
	Create(ctx context.Context, r *authenticationv1.TokenReview, opts metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

// AccessReviewer creates SubjectAccessReviews.
type AccessReviewer interface {
	Create(ctx context.Context, r *authorizationv1.SubjectAccessReview, opts metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

// Authorizer authenticates and authorizes metrics requests against the API
// server, with caching.
type Authorizer struct {
	tokens TokenReviewer
	access AccessReviewer
	now    func() time.Time

	users     *ttlCache[*authenticationv1.UserInfo] // nil value: token rejected
	decisions *ttlCache[bool]
}

// New returns an Authorizer that sends its reviews to tokens and access.
func New(tokens TokenReviewer, access AccessReviewer) *Authorizer {
	return &Authorizer{
		tokens: tokens, access: access, now: time.Now,
		users:     newTTLCache[*authenticationv1.UserInfo](maxCached),
		decisions: newTTLCache[bool](maxCached),
	}
}

// Filter is a metricsserver.Filter: it wraps handler so that only
// authenticated, authorized requests reach it. Missing or rejected tokens get
// 401, users without access 403, and review failures 500 (the scrape is
// retried at the next interval; nothing is cached).
func (a *Authorizer) Filter(log logr.Logger, handler http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		token, ok := bearerToken(req)
		if !ok {
			http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
			return
		}
		user, err := a.authenticate(req.Context(), token)
		if err != nil {
			log.Error(err, "Metrics request: TokenReview failed")
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := strings.ToLower(req.Method)
		allowed, err := a.authorize(req.Context(), user, verb, req.URL.Path)
		if err != nil {
			log.Error(err, "Metrics request: SubjectAccessReview failed", "user", user.Username)
			http.Error(w, "Authorization failed", http.StatusInternalServerError)
			return
		}
		if !allowed {
			log.V(1).Info("Metrics request denied", "user", user.Username, "verb", verb, "path", req.URL.Path)
			http.Error(w, fmt.Sprintf("Forbidden: user %q may not %s %s", user.Username, verb, req.URL.Path), http.StatusForbidden)
			return
		}
		handler.ServeHTTP(w, req)
	}), nil
}

// bearerToken reads "Authorization: Bearer <token>" (the scheme is case-insensitive).
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(req.Header.Get("Authorization")), " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// authenticate returns the token's user, nil when the API server rejects
// the token.
func (a *Authorizer) authenticate(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	key := digest(token)
	if u, ok := a.users.get(key, a.now()); ok {
		return u, nil
	}
	ctx, cancel := context.WithTimeout(ctx, ReviewTimeout)
	defer cancel()
	r, err := a.tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	if !r.Status.Authenticated {
		a.users.put(key, nil, a.now(), UnauthenticatedTTL)
		return nil, nil
	}
	u := r.Status.User.DeepCopy()
	a.users.put(key, u, a.now(), AuthenticatedTTL)
	return u, nil
}

// authorize asks whether user may `verb` the non-resource URL path.
func (a *Authorizer) authorize(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (bool, error) {
	key := accessKey(user, verb, path)
	if allowed, ok := a.decisions.get(key, a.now()); ok {
		return allowed, nil
	}
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	ctx, cancel := context.WithTimeout(ctx, ReviewTimeout)
	defer cancel()
	r, err := a.access.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	allowed := r.Status.Allowed && !r.Status.Denied
	ttl := DeniedTTL
	if allowed {
		ttl = AllowedTTL
	}
	a.decisions.put(key, allowed, a.now(), ttl)
	return allowed, nil
}

// accessKey identifies one access question: who (name, UID, groups and
// extra, in a stable order) asks to do what on which path.
func accessKey(u *authenticationv1.UserInfo, verb, path string) string {
	var b strings.Builder
	field := func(s string) { fmt.Fprintf(&b, "%d:%s", len(s), s) }
	field(u.Username)
	field(u.UID)
	groups := append([]string(nil), u.Groups...)
	sort.Strings(groups)
	for _, g := range groups {
		field("g=" + g)
	}
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field("x=" + k)
		for _, v := range u.Extra[k] {
			field(v)
		}
	}
	field(verb)
	field(path)
	return digest(b.String())
}

// digest keeps tokens out of the caches' keys.
func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
