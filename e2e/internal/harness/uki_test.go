package harness

import (
	"os"
	"testing"

	"github.com/cloister-dev/cloister/internal/measure"
)

// TestRebuildUKIWithoutChangesMeasuresTheSame is the control for the tamper
// scenarios: rebuilding the image's UKI with nothing replaced gives an
// image whose predicted PCRs equal the genuine image's, so a tampered
// rebuild differs only by the part it changed. Needs make image (skipped
// without it, failed under CI=true).
func TestRebuildUKIWithoutChangesMeasuresTheSame(t *testing.T) {
	img := NodeImage(t)
	rebuilt := RebuildUKI(t, t.TempDir(), img.UKI, nil)
	predict := func(path string) map[int][32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := measure.Predict(b)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return measure.Replay(ev, measure.PredictedPCRs)
	}
	want, got := predict(img.UKI), predict(rebuilt)
	for _, i := range measure.PredictedPCRs {
		if want[i] != got[i] {
			t.Errorf("pcr[%d]: genuine %x, rebuilt without changes %x", i, want[i], got[i])
		}
	}
}
