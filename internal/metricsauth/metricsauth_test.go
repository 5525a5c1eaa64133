package metricsauth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The API server's side is faked here to test caching and status codes with
// a controlled clock; test/integration runs the filter against a real one.

type fakeTokens struct {
	users map[string]authenticationv1.UserInfo
	err   error
	calls int
}

func (f *fakeTokens) Create(_ context.Context, r *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	out := r.DeepCopy()
	if u, ok := f.users[r.Spec.Token]; ok {
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: u}
	}
	return out, nil
}

type fakeAccess struct {
	allowed map[string]bool // username -> allowed on /metrics
	err     error
	calls   int
	last    authorizationv1.SubjectAccessReviewSpec
}

func (f *fakeAccess) Create(_ context.Context, r *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	f.calls++
	f.last = r.Spec
	if f.err != nil {
		return nil, f.err
	}
	out := r.DeepCopy()
	a := r.Spec.NonResourceAttributes
	out.Status.Allowed = f.allowed[r.Spec.User] && a != nil && a.Path == "/metrics" && a.Verb == "get"
	return out, nil
}

type fixture struct {
	tokens *fakeTokens
	access *fakeAccess
	now    time.Time
	h      http.Handler
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{
		tokens: &fakeTokens{users: map[string]authenticationv1.UserInfo{
			"prom-token":   {Username: "system:serviceaccount:monitoring:prometheus", UID: "u1", Groups: []string{"system:serviceaccounts"}, Extra: map[string]authenticationv1.ExtraValue{"k": {"v"}}},
			"nobody-token": {Username: "nobody"},
		}},
		access: &fakeAccess{allowed: map[string]bool{"system:serviceaccount:monitoring:prometheus": true}},
		now:    time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
	}
	a := New(f.tokens, f.access)
	a.now = func() time.Time { return f.now }
	h, err := a.Filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("metrics"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

func (f *fixture) get(path, authorization string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	return rec
}

func TestFilterStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		name, path, authorization string
		want                      int
	}{
		{"no header", "/metrics", "", http.StatusUnauthorized},
		{"basic auth", "/metrics", "Basic cHJvbTpwcm9t", http.StatusUnauthorized},
		{"empty bearer", "/metrics", "Bearer ", http.StatusUnauthorized},
		{"unknown token", "/metrics", "Bearer stolen", http.StatusUnauthorized},
		{"authenticated, no access", "/metrics", "Bearer nobody-token", http.StatusForbidden},
		{"allowed", "/metrics", "Bearer prom-token", http.StatusOK},
		{"scheme is case-insensitive", "/metrics", "bearer prom-token", http.StatusOK},
		{"allowed user, other path", "/debug/pprof/heap", "Bearer prom-token", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			rec := f.get(tc.path, tc.authorization)
			if rec.Code != tc.want {
				t.Fatalf("status %d (%s), want %d", rec.Code, rec.Body, tc.want)
			}
			if tc.want == http.StatusOK && rec.Body.String() != "metrics" {
				t.Errorf("body %q, want the wrapped handler's", rec.Body)
			}
			if tc.want != http.StatusOK && rec.Body.String() == "metrics" {
				t.Errorf("the wrapped handler ran for a refused request")
			}
		})
	}
}

func TestAccessReviewAsksAboutTheTokensUser(t *testing.T) {
	f := newFixture(t)
	if rec := f.get("/metrics", "Bearer prom-token"); rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	got := f.access.last
	if got.User != "system:serviceaccount:monitoring:prometheus" || got.UID != "u1" ||
		len(got.Groups) != 1 || got.Groups[0] != "system:serviceaccounts" || got.Extra["k"][0] != "v" {
		t.Errorf("SubjectAccessReview for %+v, want the TokenReview's user with UID, groups and extra", got)
	}
	if got.NonResourceAttributes == nil || got.ResourceAttributes != nil {
		t.Errorf("SubjectAccessReview attributes %+v, want non-resource only", got)
	}
}

func TestReviewsAreCachedForTheirTTL(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 3; i++ {
		if rec := f.get("/metrics", "Bearer prom-token"); rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d", i, rec.Code)
		}
	}
	if f.tokens.calls != 1 || f.access.calls != 1 {
		t.Fatalf("3 scrapes made %d TokenReviews and %d SubjectAccessReviews, want 1 and 1", f.tokens.calls, f.access.calls)
	}
	// Past the token TTL, within the access TTL: only the token is reviewed again.
	f.now = f.now.Add(AuthenticatedTTL)
	f.get("/metrics", "Bearer prom-token")
	if f.tokens.calls != 2 || f.access.calls != 1 {
		t.Errorf("after %s: %d TokenReviews and %d SubjectAccessReviews, want 2 and 1", AuthenticatedTTL, f.tokens.calls, f.access.calls)
	}
	f.now = f.now.Add(AllowedTTL)
	f.get("/metrics", "Bearer prom-token")
	if f.access.calls != 2 {
		t.Errorf("after %s: %d SubjectAccessReviews, want 2", AllowedTTL, f.access.calls)
	}

	// Refusals are cached for less time.
	f.get("/metrics", "Bearer stolen")
	f.get("/metrics", "Bearer stolen")
	if f.tokens.calls != 4 {
		t.Errorf("a rejected token was reviewed %d times in a row, want once", f.tokens.calls-3)
	}
	f.now = f.now.Add(UnauthenticatedTTL)
	f.get("/metrics", "Bearer stolen")
	if f.tokens.calls != 5 {
		t.Errorf("a rejected token was not reviewed again after %s", UnauthenticatedTTL)
	}
	before := f.access.calls
	f.get("/metrics", "Bearer nobody-token")
	f.get("/metrics", "Bearer nobody-token")
	f.now = f.now.Add(DeniedTTL)
	f.tokens.calls = 0
	f.get("/metrics", "Bearer nobody-token")
	if f.access.calls-before != 2 {
		t.Errorf("denied access: %d SubjectAccessReviews for 3 scrapes across %s, want 2", f.access.calls-before, DeniedTTL)
	}
}

func TestReviewFailuresAreNotCached(t *testing.T) {
	f := newFixture(t)
	f.tokens.err = errors.New("connection refused")
	if rec := f.get("/metrics", "Bearer prom-token"); rec.Code != http.StatusInternalServerError {
		t.Fatalf("TokenReview failing: status %d, want 500", rec.Code)
	}
	f.tokens.err = nil
	f.access.err = errors.New("etcdserver: timeout")
	if rec := f.get("/metrics", "Bearer prom-token"); rec.Code != http.StatusInternalServerError {
		t.Fatalf("SubjectAccessReview failing: status %d, want 500", rec.Code)
	}
	f.access.err = nil
	if rec := f.get("/metrics", "Bearer prom-token"); rec.Code != http.StatusOK {
		t.Fatalf("after the API server recovered: status %d, want 200", rec.Code)
	}
	if f.access.calls != 2 {
		t.Errorf("%d SubjectAccessReviews, want 2: the failed one must not be cached", f.access.calls)
	}
}

func TestAccessKeyTellsUsersApart(t *testing.T) {
	base := authenticationv1.UserInfo{Username: "u", UID: "1", Groups: []string{"a", "b"}, Extra: map[string]authenticationv1.ExtraValue{"x": {"1"}}}
	k := accessKey(&base, "get", "/metrics")
	reordered := base
	reordered.Groups = []string{"b", "a"}
	if accessKey(&reordered, "get", "/metrics") != k {
		t.Errorf("group order changed the key")
	}
	for name, u := range map[string]authenticationv1.UserInfo{
		"other name":  {Username: "v", UID: "1", Groups: base.Groups, Extra: base.Extra},
		"other uid":   {Username: "u", UID: "2", Groups: base.Groups, Extra: base.Extra},
		"fewer group": {Username: "u", UID: "1", Groups: []string{"a"}, Extra: base.Extra},
		"joined":      {Username: "u", UID: "1", Groups: []string{"ab"}, Extra: base.Extra},
		"other extra": {Username: "u", UID: "1", Groups: base.Groups, Extra: map[string]authenticationv1.ExtraValue{"x": {"2"}}},
	} {
		if accessKey(&u, "get", "/metrics") == k {
			t.Errorf("%s: same key as the base user", name)
		}
	}
	if accessKey(&base, "post", "/metrics") == k || accessKey(&base, "get", "/metricsx") == k {
		t.Errorf("verb or path not in the key")
	}
}

func TestCacheIsBounded(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	c := newTTLCache[bool](3)
	c.put("old", true, now.Add(-time.Hour), time.Minute) // already expired
	c.put("a", true, now, time.Minute)
	c.put("b", true, now, time.Minute)
	c.put("c", true, now, time.Minute) // full: the expired entry goes
	if _, ok := c.get("a", now); !ok || c.len() != 3 {
		t.Fatalf("live entries lost when an expired one could go (len %d)", c.len())
	}
	c.put("d", true, now, time.Minute) // full of live entries: start over
	if c.len() != 1 {
		t.Errorf("len %d after overflow, want 1", c.len())
	}
	if v, ok := c.get("d", now); !ok || !v {
		t.Errorf("newest entry missing")
	}
	if _, ok := c.get("d", now.Add(time.Minute)); ok {
		t.Errorf("entry served at its expiry time")
	}
}
