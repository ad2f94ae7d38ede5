package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMetricsExposition(t *testing.T) {
	m := New()
	m.Ticket("join")
	m.Rejection("attestation", "pcr[4]")
	m.Rejection("attestation", "pcr[4]")
	m.Verification("tpm", "accepted", 3*time.Millisecond)
	m.HandlerDone("/cloister.join.v1.JoinService/IssueJoinTicket", "OK", 20*time.Millisecond)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`cloister_joinservice_tickets_total{kind="join"} 1`,
		`cloister_joinservice_rejections_total{reason="pcr[4]",stage="attestation"} 2`,
		`cloister_joinservice_verification_seconds_count{result="accepted",variant="tpm"} 1`,
		`cloister_joinservice_handler_seconds_count{code="OK",method="/cloister.join.v1.JoinService/IssueJoinTicket"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}
