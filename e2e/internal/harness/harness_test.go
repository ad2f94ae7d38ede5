package harness_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/e2e/internal/harness"
)

// smokeInit proves the harness on Debian's kernel with a busybox initramfs:
// it prints what the guest sees of the vTPM, the state disk, the kernel
// command line and the SMBIOS OEM strings, and serves the command line's
// token over HTTP on guest port 8080.
const smokeInit = `
echo "E2E: init started"
if [ -e /sys/class/tpm/tpm0 ]; then
  echo "E2E: tpm major=$(cat /sys/class/tpm/tpm0/tpm_version_major) pcr0=$(cat /sys/class/tpm/tpm0/pcr-sha256/0) pcr9=$(cat /sys/class/tpm/tpm0/pcr-sha256/9)"
else
  echo "E2E: tpm none"
fi
for p in /sys/block/vd*/vd*1; do
  [ -e "$p/uevent" ] && echo "E2E: disk $(basename $p) $(grep PARTNAME $p/uevent)"
done
oem=$(for e in /sys/firmware/dmi/entries/11-*; do tr '\0' '\n' < $e/raw; done | grep -a -o 'cloister\.join=[0-9.:]*' | head -n1)
echo "E2E: oem ${oem:-none}"
token=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^e2e\.token=//p')
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /www
echo "token=$token" > /www/index.html
httpd -p 8080 -h /www
echo "E2E: serving"
sleep 900
poweroff -f
`

var (
	tpmMarker   = regexp.MustCompile(`E2E: tpm (none|major=(\d) pcr0=([0-9A-Fa-f]{64}) pcr9=([0-9A-Fa-f]{64}))`)
	diskMarker  = regexp.MustCompile(`E2E: disk (vd[a-z]1) PARTNAME=(\S+)`)
	oemMarker   = regexp.MustCompile(`E2E: oem (\S+)`)
	serveMarker = regexp.MustCompile(`E2E: serving`)
)

// TestHarnessBootsBusybox boots Debian's kernel with the harness's own
// busybox initramfs, once with SeaBIOS and once with OVMF, and checks from
// inside the guest: the vTPM is there (and measured into under OVMF), the
// state disk's GPT label, the SMBIOS OEM string, and the kernel command line
// reaching the host through the 127.0.0.1 port forward.
func TestHarnessBootsBusybox(t *testing.T) {
	harness.Enabled(t)
	kernel := harness.DebianKernel(t)
	initrd := harness.BusyboxInitramfs(t, t.TempDir(), kernel, smokeInit, "virtio_pci", "virtio_blk", "virtio_net")
	ca := harness.NewTPMCA(t)

	for _, tc := range []struct {
		name string
		ovmf bool
	}{
		{name: "seabios direct kernel boot", ovmf: false},
		{name: "ovmf measured boot", ovmf: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := randomHex(t)
			node := harness.NewNode(t, harness.NodeConfig{
				Name:         "smoke",
				Kernel:       kernel.Vmlinuz,
				Initrd:       initrd,
				Cmdline:      "quiet e2e.token=" + token,
				StateDiskMiB: 64,
				OEMStrings:   []string{"cloister.join=10.0.2.2:4242"},
				Forwards:     []int{8080},
				TPMCA:        ca,
				OVMF:         tc.ovmf,
				Timeout:      3 * time.Minute,
			})
			vm := node.Boot(t)

			m := vm.Expect(t, tpmMarker, 2*time.Minute)
			if m[1] == "none" || m[2] != "2" {
				t.Fatalf("guest sees no TPM 2.0: %q", m[0])
			}
			zero := strings.Repeat("0", 64)
			pcr0, pcr9 := strings.ToLower(m[3]), strings.ToLower(m[4])
			if tc.ovmf && (pcr0 == zero || pcr9 == zero) {
				t.Errorf("OVMF boot: PCR 0 (firmware) and PCR 9 (initrd) must be measured, got pcr0=%s pcr9=%s", pcr0, pcr9)
			}
			if !tc.ovmf && pcr9 != zero {
				t.Errorf("SeaBIOS boot: PCR 9 = %s, want the reset value (SeaBIOS does not measure the initrd)", pcr9)
			}
			if m := vm.Expect(t, diskMarker, 30*time.Second); m[2] != harness.StateDiskLabel {
				t.Errorf("state disk partition label: want %s, got %s", harness.StateDiskLabel, m[2])
			}
			if m := vm.Expect(t, oemMarker, 30*time.Second); m[1] != "cloister.join=10.0.2.2:4242" {
				t.Errorf("SMBIOS OEM string in the guest: want cloister.join=10.0.2.2:4242, got %s", m[1])
			}
			vm.Expect(t, serveMarker, 30*time.Second)
			if got, want := fetch(t, "http://"+node.Addr(8080)+"/"), "token="+token; got != want {
				t.Errorf("through the port forward: want %q, got %q", want, got)
			}
		})
	}
}

func randomHex(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// fetch GETs url, retrying briefly while the guest's server starts.
func fetch(t testing.TB, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(body))
			}
			err = fmt.Errorf("status %s, body read error %v", resp.Status, rerr)
		}
		lastErr = err
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}
