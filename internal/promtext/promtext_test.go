package promtext

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// ksmBody is a slice of real kube-state-metrics v2 output with the awkward
// cases added: escaped quotes, backslashes and newlines, commas and braces
// inside values, samples without labels, timestamps, blank lines.
const ksmBody = `# HELP kube_pod_info [STABLE] Information about pod.
# TYPE kube_pod_info gauge
kube_pod_info{namespace="default",pod="web-0",uid="0f1c",host_ip="10.0.0.1",pod_ip="10.1.0.5",node="node-1",created_by_kind="StatefulSet",created_by_name="web",priority_class="",host_network="false"} 1
kube_pod_info{namespace="odd",pod="a\"b",uid="u-2",node="n,1}",created_by_name="x\\y\nz"} 1
kube_pod_info{uid="u-3" , namespace = "sp" ,} 1 1700000000000

# HELP kube_node_info [STABLE] Information about a cluster node.
# TYPE kube_node_info gauge
kube_node_info{node="node-1",kernel_version="6.1",os_image="Ubuntu 24.04"} 1
kube_namespace_created{namespace="default"} 1.7e+09
kube_configmap_info{namespace="default",configmap="kube-root-ca.crt"} 1
kube_state_metrics_build_info 1
kube_pod_container_status_restarts_total{namespace="default",pod="web-0",uid="0f1c",container="c"} 0
weird:name_total{} -Inf
nan_value NaN
`

func TestScanSamples(t *testing.T) {
	type got struct {
		name   string
		labels map[string]string
		value  string
		ts     int64
	}
	var samples []got
	st, err := Scan(strings.NewReader(ksmBody), Limits{}, nil, func(s *Sample) error {
		g := got{name: s.Name, labels: map[string]string{}, value: string(s.value)}
		s.Labels(func(name, _ []byte) bool {
			v, ok := s.Label(string(name))
			if !ok {
				t.Errorf("%s: Labels listed %q but Label does not find it", s.Name, name)
			}
			g.labels[string(name)] = v
			return true
		})
		if ts, ok := s.Timestamp(); ok {
			g.ts = ts
		}
		if _, err := s.Value(); err != nil {
			t.Errorf("%s: Value: %v", s.Name, err)
		}
		samples = append(samples, g)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []got{
		{"kube_pod_info", map[string]string{"namespace": "default", "pod": "web-0", "uid": "0f1c", "host_ip": "10.0.0.1",
			"pod_ip": "10.1.0.5", "node": "node-1", "created_by_kind": "StatefulSet", "created_by_name": "web",
			"priority_class": "", "host_network": "false"}, "1", 0},
		{"kube_pod_info", map[string]string{"namespace": "odd", "pod": `a"b`, "uid": "u-2", "node": "n,1}", "created_by_name": "x\\y\nz"}, "1", 0},
		{"kube_pod_info", map[string]string{"uid": "u-3", "namespace": "sp"}, "1", 1700000000000},
		{"kube_node_info", map[string]string{"node": "node-1", "kernel_version": "6.1", "os_image": "Ubuntu 24.04"}, "1", 0},
		{"kube_namespace_created", map[string]string{"namespace": "default"}, "1.7e+09", 0},
		{"kube_configmap_info", map[string]string{"namespace": "default", "configmap": "kube-root-ca.crt"}, "1", 0},
		{"kube_state_metrics_build_info", map[string]string{}, "1", 0},
		{"kube_pod_container_status_restarts_total", map[string]string{"namespace": "default", "pod": "web-0", "uid": "0f1c", "container": "c"}, "0", 0},
		{"weird:name_total", map[string]string{}, "-Inf", 0},
		{"nan_value", map[string]string{}, "NaN", 0},
	}
	if len(samples) != len(want) {
		t.Fatalf("got %d samples, want %d: %+v", len(samples), len(want), samples)
	}
	for i := range want {
		g, w := samples[i], want[i]
		if g.name != w.name || g.value != w.value || g.ts != w.ts || !maps.Equal(g.labels, w.labels) {
			t.Errorf("sample %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
	wantStats := Stats{Bytes: int64(len(ksmBody)), Lines: 15, Samples: 10, Matched: 10}
	if st != wantStats {
		t.Errorf("stats %+v, want %+v", st, wantStats)
	}
}

func TestLabelAccessors(t *testing.T) {
	_, err := Scan(strings.NewReader(`m{a="x\"y",b="plain",c="",d="\\n"} 1`), Limits{}, nil, func(s *Sample) error {
		for _, tc := range []struct {
			key, want string
			ok        bool
		}{{"a", `x"y`, true}, {"b", "plain", true}, {"c", "", true}, {"d", `\n`, true}, {"e", "", false}, {"", "", false}} {
			v, ok := s.Label(tc.key)
			if v != tc.want || ok != tc.ok {
				t.Errorf("Label(%q) = %q, %v; want %q, %v", tc.key, v, ok, tc.want, tc.ok)
			}
			b, ok := s.LabelBytes([]byte("pre:"), tc.key)
			wantB := "pre:" + tc.want
			if string(b) != wantB || ok != tc.ok {
				t.Errorf("LabelBytes(%q) = %q, %v; want %q, %v", tc.key, b, ok, wantB, tc.ok)
			}
		}
		if _, ok := s.Timestamp(); ok {
			t.Error("Timestamp found on a line without one")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		name     string
		families map[string]bool
		want     map[string]int
	}{
		{"wanted families, absent one reported as 0",
			map[string]bool{"kube_pod_info": true, "kube_node_info": true, "kube_secret_info": true},
			map[string]int{"kube_pod_info": 3, "kube_node_info": 1, "kube_secret_info": 0}},
		{"all families", nil, map[string]int{
			"kube_pod_info": 3, "kube_node_info": 1, "kube_namespace_created": 1, "kube_configmap_info": 1,
			"kube_state_metrics_build_info": 1, "kube_pod_container_status_restarts_total": 1,
			"weird:name_total": 1, "nan_value": 1}},
		{"empty set means none", map[string]bool{}, map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Count(strings.NewReader(ksmBody), Limits{}, tc.families)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLineEndings(t *testing.T) {
	for _, body := range []string{
		"a 1\r\nb{x=\"1\"} 2\r\n",
		"a 1\nb{x=\"1\"} 2",             // no final newline
		"\n\n  a 1\n\t\nb{x=\"1\"} 2\n", // blank and indented lines
		"# only\na 1\n# a comment with \"quotes\" and {braces\nb{x=\"1\"} 2\n#",
	} {
		got, err := Count(strings.NewReader(body), Limits{}, nil)
		if err != nil {
			t.Errorf("%q: %v", body, err)
			continue
		}
		if want := map[string]int{"a": 1, "b": 1}; !maps.Equal(got, want) {
			t.Errorf("%q: got %v, want %v", body, got, want)
		}
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		line, reason string
	}{
		{`{a="b"} 1`, "expected a metric name"},
		{`9metric 1`, "expected a metric name"},
		{`m`, "missing value"},
		{`m `, "missing value"},
		{`m{a="b"}`, "missing value"},
		{`m{a="b"}1`, "expected a space"},
		{`m-x 1`, "expected a space"},
		{`m one`, "is not a number"},
		{`m 1e`, "is not a number"},
		{`m .`, "is not a number"},
		{`m 1 2.5`, "timestamp"},
		{`m 1 2 3`, "unexpected text after the timestamp"},
		{`m{a="b" 1`, "expected ',' or '}'"},
		{`m{a="b"`, "unterminated label set"},
		{`m{a="b",`, "unterminated label set"},
		{`m{a="b} 1`, "unterminated value"},
		{`m{a="b\`, "unterminated value"},
		{`m{a=b} 1`, "expected a quoted value"},
		{`m{a} 1`, "expected '='"},
		{`m{="b"} 1`, "expected a label name"},
		{`m{1a="b"} 1`, "expected a label name"},
		{`m{a="\t"} 1`, "invalid escape"},
		{`m{a="b"c="d"} 1`, "expected ',' or '}'"},
		{"m{a=\"b\"}\x00 1", "expected a space"},
	} {
		t.Run(tc.line, func(t *testing.T) {
			body := "# HELP m ok\ngood 1\n" + tc.line + "\nafter 1\n"
			calls := 0
			_, err := Scan(strings.NewReader(body), Limits{}, nil, func(*Sample) error { calls++; return nil })
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			var le *LineError
			if !errors.As(err, &le) || le.Line != 3 {
				t.Fatalf("err = %#v, want a *LineError for line 3", err)
			}
			if !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), "line 3") {
				t.Errorf("error %q does not say %q and the line number", err, tc.reason)
			}
			if calls != 1 {
				t.Errorf("callback ran %d times, want 1 (only the line before the bad one)", calls)
			}
			// Malformed lines of unwanted families are refused too: the
			// input as a whole is not the format.
			if _, err := Count(strings.NewReader(body), Limits{}, map[string]bool{"good": true}); !errors.Is(err, ErrMalformed) {
				t.Errorf("with families: err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestLongLines(t *testing.T) {
	long := strings.Repeat("x", 300)
	body := "# HELP " + long + "\n" +
		"wanted{a=\"1\"} 1\n" +
		"other{a=\"" + long + "\"} 1\n" +
		"wanted{a=\"2\"} 1\n"
	lim := Limits{MaxLineBytes: 100}

	t.Run("comment and unwanted family are skipped and counted", func(t *testing.T) {
		var seen []string
		st, err := Scan(strings.NewReader(body), lim, map[string]bool{"wanted": true}, func(s *Sample) error {
			v, _ := s.Label("a")
			seen = append(seen, v)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seen, []string{"1", "2"}) {
			t.Errorf("saw %v", seen)
		}
		want := Stats{Bytes: int64(len(body)), Lines: 4, Samples: 3, Matched: 2, LongLines: 2}
		if st != want {
			t.Errorf("stats %+v, want %+v", st, want)
		}
	})
	t.Run("wanted family is an error", func(t *testing.T) {
		for _, fam := range []map[string]bool{nil, {"other": true}} {
			_, err := Scan(strings.NewReader(body), lim, fam, func(*Sample) error { return nil })
			var le *LineError
			if !errors.Is(err, ErrLineTooLong) || !errors.As(err, &le) || le.Line != 3 {
				t.Errorf("families %v: err = %v, want ErrLineTooLong on line 3", fam, err)
			}
		}
	})
	t.Run("exactly the limit fits", func(t *testing.T) {
		line := "m{a=\"" + strings.Repeat("y", 100-len("m{a=\"\"} 1")) + "\"} 1"
		if len(line) != 100 {
			t.Fatalf("test line is %d bytes", len(line))
		}
		got, err := Count(strings.NewReader(line+"\n"+line), lim, nil)
		if err != nil || got["m"] != 2 {
			t.Errorf("got %v, %v", got, err)
		}
		_, err = Count(strings.NewReader(line+"z\n"), lim, nil)
		if !errors.Is(err, ErrLineTooLong) {
			t.Errorf("one byte over: err = %v", err)
		}
	})
	t.Run("no newline at all", func(t *testing.T) {
		r := io.LimitReader(repeatReader('#'), 10<<20)
		st, err := Scan(r, lim, nil, func(*Sample) error { return nil })
		if err != nil || st.LongLines != 1 || st.Bytes != 10<<20 {
			t.Errorf("stats %+v, err %v", st, err)
		}
	})
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestMaxBytes(t *testing.T) {
	_, err := Count(strings.NewReader(ksmBody), Limits{MaxBytes: 100}, nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("err = %v, want ErrTooLarge", err)
	}
	if _, err := Count(strings.NewReader(ksmBody), Limits{MaxBytes: int64(len(ksmBody))}, nil); err != nil {
		t.Errorf("exactly MaxBytes: %v", err)
	}
	// An endless stream ends at the limit, also inside one endless line.
	for _, b := range []byte{'\n', '#', 'm'} {
		_, err = Count(repeatReader(b), Limits{MaxBytes: 1 << 20}, nil)
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrLineTooLong) {
			t.Errorf("endless %q: err = %v", b, err)
		}
	}
}

func TestCallbackAndReaderErrors(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	st, err := Scan(strings.NewReader(ksmBody), Limits{}, nil, func(*Sample) error {
		if n++; n == 2 {
			return stop
		}
		return nil
	})
	if err != stop || st.Matched != 2 {
		t.Errorf("err = %v, stats %+v; want the callback's error after 2 samples", err, st)
	}
	broken := errors.New("connection reset")
	_, err = Count(io.MultiReader(strings.NewReader("a 1\nb 2\n"), errReader{broken}), Limits{}, nil)
	if !errors.Is(err, broken) {
		t.Errorf("err = %v, want the reader's error", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func FuzzScan(f *testing.F) {
	for _, seed := range []string{
		ksmBody,
		"",
		"m 1",
		`m{a="b\"c\\d\ne",b="}",} +Inf -123`,
		"# TYPE m gauge\nm{} 0x1\n",
		"m{a=\"\\",
		"\r\n\r\n",
		"m 1 1\nm{a=\"b\"} 2 2",
		strings.Repeat("x", 200) + " 1\n# " + strings.Repeat("y", 200),
	} {
		f.Add([]byte(seed), uint8(0))
		f.Add([]byte(seed), uint8(70))
	}
	f.Fuzz(func(t *testing.T, data []byte, maxLine uint8) {
		lim := Limits{MaxLineBytes: int(maxLine)}
		if maxLine == 0 {
			lim.MaxLineBytes = 0
		}
		labelCount := 0
		st, err := Scan(bytes.NewReader(data), lim, nil, func(s *Sample) error {
			if s.Name == "" {
				t.Fatal("empty name")
			}
			s.Labels(func(name, _ []byte) bool {
				labelCount++
				if _, ok := s.Label(string(name)); !ok {
					t.Fatalf("label %q listed but not found", name)
				}
				_, _ = s.LabelBytes(nil, string(name))
				return true
			})
			_, _ = s.Value()
			_, _ = s.Timestamp()
			return nil
		})
		if st.Bytes > int64(len(data)) || st.Matched > st.Samples || st.Samples > st.Lines {
			t.Fatalf("inconsistent stats %+v for %d bytes", st, len(data))
		}
		if err == nil && st.Bytes != int64(len(data)) {
			t.Fatalf("read %d of %d bytes without an error", st.Bytes, len(data))
		}
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		counts, cerr := Count(bytes.NewReader(data), lim, nil)
		if (cerr == nil) != (err == nil) {
			t.Fatalf("Scan error %v but Count error %v", err, cerr)
		}
		total := 0
		for _, n := range counts {
			total += n
		}
		if cerr == nil && total != st.Matched {
			t.Fatalf("Count found %d samples, Scan %d", total, st.Matched)
		}
	})
}

// ksmStream generates a kube-state-metrics-like body of about size bytes
// on the fly: a HELP and TYPE pair, then kube_pod_info and
// kube_pod_status_phase lines with distinct UIDs. It is an io.Reader so a
// body of hundreds of megabytes never exists in memory.
type ksmStream struct {
	size, sent int64
	n          int
	pending    []byte
	buf        []byte
}

func newKSMStream(size int64) *ksmStream {
	return &ksmStream{size: size, pending: []byte("# HELP kube_pod_info [STABLE] Information about pod.\n# TYPE kube_pod_info gauge\n")}
}

func (s *ksmStream) Read(p []byte) (int, error) {
	if s.sent >= s.size && len(s.pending) == 0 {
		return 0, io.EOF
	}
	if len(s.pending) == 0 {
		s.buf = appendPodLines(s.buf[:0], s.n)
		s.n++
		s.pending = s.buf
	}
	k := copy(p, s.pending)
	s.pending = s.pending[k:]
	s.sent += int64(k)
	return k, nil
}

// appendPodLines appends the lines KSM writes for pod i. It is written
// with strconv rather than fmt so that generating the stream allocates
// nothing and the memory test measures the parser alone.
func appendPodLines(b []byte, i int) []byte {
	ns, node := int64(i%50), int64(i%300)
	ident := func(b []byte) []byte {
		b = append(b, `namespace="ns-`...)
		b = strconv.AppendInt(b, ns, 10)
		b = append(b, `",pod="app-`...)
		b = strconv.AppendInt(b, ns, 10)
		b = append(b, `-7c9f8d6b5-x`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `",uid="`...)
		b = strconv.AppendInt(b, int64(i), 16)
		b = append(b, `-1d2e-4f5a-8b9c-`...)
		b = strconv.AppendInt(b, int64(i)*7919, 16)
		return append(b, '"')
	}
	b = append(b, "kube_pod_info{"...)
	b = ident(b)
	b = append(b, `,host_ip="10.0.0.`...)
	b = strconv.AppendInt(b, node, 10)
	b = append(b, `",pod_ip="10.1.`...)
	b = strconv.AppendInt(b, int64(i>>8&255), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(i&255), 10)
	b = append(b, `",node="kwok-node-`...)
	b = strconv.AppendInt(b, node, 10)
	b = append(b, `",created_by_kind="ReplicaSet",created_by_name="app-`...)
	b = strconv.AppendInt(b, ns, 10)
	b = append(b, `-7c9f8d6b5",priority_class="",host_network="false"} 1`+"\n"...)
	b = append(b, "kube_pod_status_phase{"...)
	b = ident(b)
	return append(b, `,phase="Running"} 1`+"\n"...)
}

// TestBoundedMemory streams 200 MB through Count and Scan and checks that
// what they allocate does not grow with the body: it must stay far below
// the body (a few KiB of buffer and tables, not megabytes).
func TestBoundedMemory(t *testing.T) {
	const size = 200 << 20
	fam := map[string]bool{"kube_pod_info": true}

	var uid []byte
	run := func() (int, error) {
		n := 0
		_, err := Scan(newKSMStream(size), Limits{}, fam, func(s *Sample) error {
			var ok bool
			if uid, ok = s.LabelBytes(uid[:0], "uid"); ok {
				n++
			}
			return nil
		})
		return n, err
	}
	// Warm up once so that uid's buffer is grown outside the measurement.
	if _, err := Scan(newKSMStream(1<<20), Limits{}, fam, func(s *Sample) error { uid, _ = s.LabelBytes(uid[:0], "uid"); return nil }); err != nil {
		t.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n, err := run()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n < 500_000 {
		t.Fatalf("only %d kube_pod_info samples in 200 MB", n)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	// The stream generator allocates nothing per line once its buffer has
	// grown; Scan holds a 64 KiB buffer and a small name table.
	if alloc > 1<<20 {
		t.Errorf("scanning 200 MB (%d samples) allocated %d bytes in total; want well under 1 MiB", n, alloc)
	}
	t.Logf("200 MB, %d kube_pod_info samples, %d bytes allocated, %d mallocs", n, alloc, after.Mallocs-before.Mallocs)
}

// TestAllocsIndependentOfLength checks that Count allocates the same number
// of times for 1,000 and for 20,000 lines.
func TestAllocsIndependentOfLength(t *testing.T) {
	fam := map[string]bool{"kube_pod_info": true, "kube_pod_status_phase": true}
	allocs := func(pods int) float64 {
		var body []byte
		for i := range pods {
			body = appendPodLines(body, i)
		}
		return testing.AllocsPerRun(5, func() {
			if _, err := Count(bytes.NewReader(body), Limits{}, fam); err != nil {
				t.Fatal(err)
			}
		})
	}
	small, large := allocs(1000), allocs(20000)
	if large > small || large > 20 {
		t.Errorf("Count allocated %.0f times for 1,000 pods and %.0f for 20,000; want a small constant", small, large)
	}
}

// BenchmarkCount counts a realistic shard body: 100,000 pods, each with a
// kube_pod_info and a kube_pod_status_phase line (about 45 MB), of which
// kube_pod_info is wanted.
func BenchmarkCount(b *testing.B) {
	body := []byte("# HELP kube_pod_info [STABLE] Information about pod.\n# TYPE kube_pod_info gauge\n")
	for i := range 100_000 {
		body = appendPodLines(body, i)
	}
	fam := map[string]bool{"kube_pod_info": true}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := Count(bytes.NewReader(body), Limits{}, fam)
		if err != nil || got["kube_pod_info"] != 100_000 {
			b.Fatalf("got %v, %v", got, err)
		}
	}
}
