package main

import "testing"

func TestSampleValue(t *testing.T) {
	for line, want := range map[string]float64{
		`go_gc_heap_live_bytes 6.5e+06`:                                             6.5e6,
		`rest_client_requests_total{code="200",host="h",method="GET"} 12`:           12,
		`rest_client_requests_total{code="200",host="a }b",method="PUT"} 3.5`:       3.5,
		`controller_runtime_reconcile_total{controller="ksmscale"} 7 1700000000000`: 7,
		`garbage`: 0,
	} {
		if got := sampleValue(line); got != want {
			t.Errorf("sampleValue(%q) = %v, want %v", line, got, want)
		}
	}
}
