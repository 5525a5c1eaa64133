// Package promtext reads the Prometheus text exposition format (version
// 0.0.4, what kube-state-metrics serves unless asked for OpenMetrics) as a
// stream, in memory bounded by the longest allowed line rather than by the
// body.
//
// A kube-state-metrics shard of a large cluster serves tens of megabytes per
// scrape, and the operator scrapes its shards to verify a hand-over; reading
// such a body whole (io.ReadAll, or bufio.Scanner, whose buffer grows to the
// longest line) would make the operator's memory grow with the cluster. Scan
// reads through a bufio.Reader of fixed size, hands each sample line to a
// callback without copying it, and lets the callback read only the labels it
// needs.
//
// The package is pure: it does no I/O of its own beyond reading the given
// io.Reader, so it serves the operator and the test watchers alike.
package promtext

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Defaults applied by Scan to zero Limits.
const (
	// DefaultMaxLineBytes is generous for kube-state-metrics: its longest
	// ordinary lines (kube_pod_info, kube_*_labels with an allow-list) are a
	// few hundred bytes to a few KiB.
	DefaultMaxLineBytes = 64 << 10
	// DefaultMaxBytes stops a runaway or hostile endpoint long before it
	// costs minutes of CPU; a 150,000-pod shard serves well under this.
	DefaultMaxBytes int64 = 1 << 30
)

// minLineBytes is the smallest line buffer Scan uses, whatever Limits says:
// bufio refuses smaller buffers, and no useful sample line is shorter.
const minLineBytes = 64

// internCap bounds the table of distinct metric names Scan keeps to give
// Sample.Name without an allocation per line. kube-state-metrics exports a
// few hundred names; garbage input with a new name on every line must not
// make the table grow with the body.
const internCap = 4096

var (
	// ErrMalformed is wrapped by every error about input that is not the
	// text format (see *LineError for the line number).
	ErrMalformed = errors.New("malformed exposition")
	// ErrLineTooLong is wrapped when a sample line of a wanted family is
	// longer than Limits.MaxLineBytes. Such a line is not skipped: dropping
	// it silently would make every count that includes it wrong.
	ErrLineTooLong = errors.New("line too long")
	// ErrTooLarge is returned (wrapped) when the input exceeds
	// Limits.MaxBytes.
	ErrTooLarge = errors.New("exposition too large")
)

// LineError says which line of the input was refused and why. It wraps
// ErrMalformed or ErrLineTooLong, so callers test it with errors.Is.
type LineError struct {
	// Line is the 1-based line number.
	Line int
	// Reason says what was wrong, in words.
	Reason string
	// Excerpt is the start of the line, quoted, for the message.
	Excerpt string
	// Err is ErrMalformed or ErrLineTooLong.
	Err error
}

func (e *LineError) Error() string {
	if e.Excerpt == "" {
		return fmt.Sprintf("promtext: line %d: %v: %s", e.Line, e.Err, e.Reason)
	}
	return fmt.Sprintf("promtext: line %d: %v: %s in %s", e.Line, e.Err, e.Reason, e.Excerpt)
}

// Unwrap returns ErrMalformed or ErrLineTooLong.
func (e *LineError) Unwrap() error { return e.Err }

// Limits bounds what one Scan reads. Zero fields take the defaults.
type Limits struct {
	// MaxLineBytes is the longest line accepted, not counting the newline;
	// it is also the size of the read buffer, so it bounds Scan's memory.
	// A longer comment line, or a longer sample line of a family that is
	// not wanted, is read through, discarded and counted in
	// Stats.LongLines; a longer sample line of a wanted family is an error
	// wrapping ErrLineTooLong. Default DefaultMaxLineBytes; values below
	// 64 are raised to 64.
	MaxLineBytes int
	// MaxBytes is the most Scan reads in total; past it, Scan stops with an
	// error wrapping ErrTooLarge. Default DefaultMaxBytes.
	MaxBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = DefaultMaxLineBytes
	}
	l.MaxLineBytes = max(l.MaxLineBytes, minLineBytes)
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Stats says what one Scan read.
type Stats struct {
	// Bytes is the number of bytes consumed.
	Bytes int64
	// Lines is the number of lines, including comments and blank lines.
	Lines int
	// Samples is the number of sample lines of any family.
	Samples int
	// Matched is the number of sample lines handed to the callback.
	Matched int
	// LongLines is the number of lines skipped for exceeding
	// Limits.MaxLineBytes (comments and unwanted families only).
	LongLines int
}

// Sample is one sample line, valid only during the callback it is passed to:
// Scan reuses it and the buffer under it for the next line.
type Sample struct {
	// Name is the metric name. It is safe to keep: names are interned, not
	// views of the read buffer.
	Name string
	// labels is the text between the braces, already checked to be well
	// formed; nil when the sample has none.
	labels []byte
	// value and timestamp are the raw tokens after the labels; timestamp is
	// nil when absent.
	value, timestamp []byte
}

// Label returns the unescaped value of the label named key, as a new string
// the caller may keep.
func (s *Sample) Label(key string) (string, bool) {
	raw, escaped, ok := s.findLabel(key)
	if !ok {
		return "", false
	}
	if !escaped {
		return string(raw), true
	}
	return string(unescape(make([]byte, 0, len(raw)), raw)), true
}

// LabelBytes is Label without an allocation: it appends the unescaped value
// of the label named key to dst and returns the result. Use it with a
// reused dst when a string per line would cost too much.
func (s *Sample) LabelBytes(dst []byte, key string) ([]byte, bool) {
	raw, escaped, ok := s.findLabel(key)
	if !ok {
		return dst, false
	}
	if !escaped {
		return append(dst, raw...), true
	}
	return unescape(dst, raw), true
}

// Labels calls fn for every label in order of appearance with its name and
// raw (still escaped) value; the slices are valid only during the call.
// It stops early when fn returns false.
func (s *Sample) Labels(fn func(name, rawValue []byte) bool) {
	rest := s.labels
	for {
		name, raw, _, next, ok := nextLabel(rest)
		if !ok || !fn(name, raw) {
			return
		}
		rest = next
	}
}

// Value parses the sample value.
func (s *Sample) Value() (float64, error) {
	return strconv.ParseFloat(string(s.value), 64)
}

// Timestamp returns the sample's timestamp in milliseconds since the epoch,
// and false when the line has none.
func (s *Sample) Timestamp() (int64, bool) {
	if s.timestamp == nil {
		return 0, false
	}
	ts, err := strconv.ParseInt(string(s.timestamp), 10, 64)
	return ts, err == nil
}

func (s *Sample) findLabel(key string) (raw []byte, escaped, ok bool) {
	rest := s.labels
	for {
		name, raw, esc, next, ok := nextLabel(rest)
		if !ok {
			return nil, false, false
		}
		if string(name) == key {
			return raw, esc, true
		}
		rest = next
	}
}

// nextLabel reads one `name="value"` (and the separator after it) from text
// that parseLabels has already accepted.
func nextLabel(text []byte) (name, raw []byte, escaped bool, rest []byte, ok bool) {
	i := skipSpace(text, 0)
	if i >= len(text) {
		return nil, nil, false, nil, false
	}
	start := i
	for i < len(text) && isNameChar(text[i], i > start) {
		i++
	}
	name = text[start:i]
	i = skipSpace(text, i)
	i = skipSpace(text, i+1) // '='
	i++                      // opening quote
	vstart := i
	for text[i] != '"' {
		if text[i] == '\\' {
			escaped = true
			i++
		}
		i++
	}
	raw = text[vstart:i]
	i = skipSpace(text, i+1)
	if i < len(text) && text[i] == ',' {
		i++
	}
	return name, raw, escaped, text[i:], true
}

// unescape appends raw with the format's three escapes (\\, \", \n) undone.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' && i+1 < len(raw) {
			i++
			if c = raw[i]; c == 'n' {
				c = '\n'
			}
		}
		dst = append(dst, c)
	}
	return dst
}

// Scan reads r line by line and calls fn for every sample line whose metric
// name is in families (nil means every sample). Families are matched against
// the sample's own name exactly: kube-state-metrics exports gauges and
// counters whose family name is the sample name; a histogram's _bucket,
// _sum and _count samples are matched by those names.
//
// Comments (# HELP, # TYPE and any other) and blank lines are skipped. Every
// sample line, wanted or not, is checked: a line that is not
// `name[{labels}] value [timestamp]` stops Scan with a *LineError wrapping
// ErrMalformed. Label values may contain any byte but an unescaped quote;
// the escapes \\, \" and \n are understood, any other is malformed. Lines
// may end in \n or \r\n; the last line needs no newline.
//
// fn's error stops Scan and is returned unchanged. The Stats are returned
// in every case and describe what was read up to the end or the error.
// Memory is the line buffer (Limits.MaxLineBytes) plus a table of at most a
// few thousand distinct metric names, whatever the size of the input.
func Scan(r io.Reader, lim Limits, families map[string]bool, fn func(*Sample) error) (Stats, error) {
	lim = lim.withDefaults()
	sc := scanner{
		br:       bufio.NewReaderSize(r, lim.MaxLineBytes+1),
		lim:      lim,
		families: families,
		names:    make(map[string]string, len(families)),
	}
	// Wanted names are interned up front so that Sample.Name of a wanted
	// line never allocates.
	for f := range families {
		sc.names[f] = f
	}
	err := sc.run(fn)
	return sc.stats, err
}

// Count returns the number of sample lines (series, for kube-state-metrics,
// which never repeats one) per metric name. With families, every wanted
// family is present in the result, with 0 when it has no samples, so a
// caller can tell "none" from "not asked"; without, every name found is.
func Count(r io.Reader, lim Limits, families map[string]bool) (map[string]int, error) {
	counts := make(map[string]int, len(families))
	for f := range families {
		counts[f] = 0
	}
	_, err := Scan(r, lim, families, func(s *Sample) error {
		counts[s.Name]++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return counts, nil
}

type scanner struct {
	br       *bufio.Reader
	lim      Limits
	families map[string]bool
	names    map[string]string
	stats    Stats
	sample   Sample
}

func (sc *scanner) run(fn func(*Sample) error) error {
	for {
		line, err := sc.br.ReadSlice('\n')
		if len(line) > 0 || err == bufio.ErrBufferFull {
			sc.stats.Lines++
		}
		sc.stats.Bytes += int64(len(line))
		if sc.stats.Bytes > sc.lim.MaxBytes {
			return fmt.Errorf("promtext: %w: more than %d bytes", ErrTooLarge, sc.lim.MaxBytes)
		}
		switch {
		case err == bufio.ErrBufferFull:
			if err := sc.longLine(line); err != nil {
				return err
			}
			continue
		case err == io.EOF:
			if len(line) > 0 {
				if err := sc.line(line, fn); err != nil {
					return err
				}
			}
			return nil
		case err != nil:
			return fmt.Errorf("promtext: reading line %d: %w", sc.stats.Lines, err)
		}
		if err := sc.line(line, fn); err != nil {
			return err
		}
	}
}

// longLine handles a line that does not fit the buffer: prefix is its
// first MaxLineBytes+1 bytes. The rest is read and dropped in buffer-sized
// pieces, so even a body without any newline costs no more memory.
func (sc *scanner) longLine(prefix []byte) error {
	lineNo := sc.stats.Lines
	i := skipSpace(prefix, 0)
	wanted := false
	var name []byte
	if i < len(prefix) && prefix[i] != '#' {
		name = prefix[i:scanName(prefix, i)]
		wanted = sc.families == nil || sc.families[string(name)]
	}
	if wanted {
		return &LineError{Line: lineNo, Err: ErrLineTooLong, Excerpt: excerpt(prefix),
			Reason: fmt.Sprintf("sample longer than %d bytes", sc.lim.MaxLineBytes)}
	}
	for {
		more, err := sc.br.ReadSlice('\n')
		sc.stats.Bytes += int64(len(more))
		if sc.stats.Bytes > sc.lim.MaxBytes {
			return fmt.Errorf("promtext: %w: more than %d bytes", ErrTooLarge, sc.lim.MaxBytes)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("promtext: reading line %d: %w", lineNo, err)
		}
		break
	}
	if name != nil {
		sc.stats.Samples++
	}
	sc.stats.LongLines++
	return nil
}

func (sc *scanner) line(line []byte, fn func(*Sample) error) error {
	// Trim the line ending; the format has \n, \r\n is tolerated.
	end := len(line)
	if end > 0 && line[end-1] == '\n' {
		end--
	}
	if end > 0 && line[end-1] == '\r' {
		end--
	}
	line = line[:end]
	i := skipSpace(line, 0)
	if i == len(line) || line[i] == '#' {
		return nil
	}
	sc.stats.Samples++
	s := &sc.sample
	*s = Sample{}
	j := scanName(line, i)
	if j == i {
		return sc.malformed(line, "expected a metric name")
	}
	name := line[i:j]
	i = j
	if i < len(line) && line[i] == '{' {
		end, reason := parseLabels(line, i+1)
		if reason != "" {
			return sc.malformed(line, reason)
		}
		s.labels = line[i+1 : end]
		i = end + 1
	}
	// value
	k := skipSpace(line, i)
	if k == i && k < len(line) {
		return sc.malformed(line, "expected a space before the value")
	}
	i = k
	vstart := i
	for i < len(line) && line[i] != ' ' && line[i] != '\t' {
		i++
	}
	s.value = line[vstart:i]
	if !validFloat(s.value) {
		if len(s.value) == 0 {
			return sc.malformed(line, "missing value")
		}
		return sc.malformed(line, fmt.Sprintf("value %s is not a number", excerpt(s.value)))
	}
	// optional timestamp
	i = skipSpace(line, i)
	if i < len(line) {
		tstart := i
		for i < len(line) && line[i] != ' ' && line[i] != '\t' {
			i++
		}
		s.timestamp = line[tstart:i]
		if !validInt(s.timestamp) {
			return sc.malformed(line, fmt.Sprintf("timestamp %s is not an integer", excerpt(s.timestamp)))
		}
		if skipSpace(line, i) != len(line) {
			return sc.malformed(line, "unexpected text after the timestamp")
		}
	}
	if sc.families != nil && !sc.families[string(name)] {
		return nil
	}
	s.Name = sc.intern(name)
	sc.stats.Matched++
	return fn(s)
}

// intern returns name as a string, allocating only the first time a name
// is seen (and every time once the table is full).
func (sc *scanner) intern(name []byte) string {
	if s, ok := sc.names[string(name)]; ok {
		return s
	}
	s := string(name)
	if len(sc.names) < internCap {
		sc.names[s] = s
	}
	return s
}

func (sc *scanner) malformed(line []byte, reason string) error {
	return &LineError{Line: sc.stats.Lines, Err: ErrMalformed, Reason: reason, Excerpt: excerpt(line)}
}

// parseLabels checks the label text starting at line[i] (just after '{')
// and returns the index of the closing '}', or a reason it is malformed.
func parseLabels(line []byte, i int) (int, string) {
	for {
		i = skipSpace(line, i)
		if i >= len(line) {
			return 0, "unterminated label set"
		}
		if line[i] == '}' {
			return i, ""
		}
		start := i
		for i < len(line) && isNameChar(line[i], i > start) {
			i++
		}
		if i == start {
			return 0, fmt.Sprintf("expected a label name at byte %d", start+1)
		}
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != '=' {
			return 0, fmt.Sprintf("expected '=' after label %q", line[start:i])
		}
		i = skipSpace(line, i+1)
		if i >= len(line) || line[i] != '"' {
			return 0, fmt.Sprintf("expected a quoted value for label %q", label(line, start))
		}
		i++
	value:
		for {
			if i >= len(line) {
				return 0, fmt.Sprintf("unterminated value of label %q", label(line, start))
			}
			switch line[i] {
			case '"':
				break value
			case '\\':
				if i+1 >= len(line) {
					return 0, fmt.Sprintf("unterminated value of label %q", label(line, start))
				}
				switch line[i+1] {
				case '\\', '"', 'n':
				default:
					return 0, fmt.Sprintf("invalid escape \\%c in label %q", line[i+1], label(line, start))
				}
				i += 2
			default:
				i++
			}
		}
		i = skipSpace(line, i+1)
		if i >= len(line) {
			return 0, "unterminated label set"
		}
		switch line[i] {
		case ',':
			i++
		case '}':
		default:
			return 0, fmt.Sprintf("expected ',' or '}' after label %q", label(line, start))
		}
	}
}

// label returns the label name that starts at line[start], for messages.
func label(line []byte, start int) []byte {
	i := start
	for i < len(line) && isNameChar(line[i], i > start) {
		i++
	}
	return line[start:i]
}

// scanName returns the end of the metric name that starts at line[i].
func scanName(line []byte, i int) int {
	start := i
	for i < len(line) && (isNameChar(line[i], i > start) || line[i] == ':') {
		i++
	}
	return i
}

func isNameChar(c byte, notFirst bool) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || notFirst && '0' <= c && c <= '9'
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

// validFloat accepts what Prometheus writes as a sample value: a decimal
// float (Go's 'g' format), or Inf/NaN with an optional sign, any case.
func validFloat(b []byte) bool {
	i := 0
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		i++
	}
	if rest := b[i:]; equalFold(rest, "inf") || equalFold(rest, "infinity") || equalFold(rest, "nan") {
		return true
	}
	digits := 0
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i, digits = i+1, digits+1
	}
	if i < len(b) && b[i] == '.' {
		i++
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i, digits = i+1, digits+1
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !(i < len(b) && '0' <= b[i] && b[i] <= '9') {
			return false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	return i == len(b)
}

// equalFold reports whether b is s, ignoring ASCII case; s is lower case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func validInt(b []byte) bool {
	i := 0
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		i++
	}
	if i == len(b) {
		return false
	}
	for ; i < len(b); i++ {
		if b[i] < '0' || b[i] > '9' {
			return false
		}
	}
	return true
}

// excerpt quotes the start of b for an error message.
func excerpt(b []byte) string {
	const n = 80
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}
