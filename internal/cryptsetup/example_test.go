package cryptsetup_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/internal/cryptsetup"
)

// Example shows a node's disk from first boot to keyed: format with a
// one-time passphrase, then move to the key the join service derives.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cryptsetup-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		fmt.Println(err)
		return
	}
	if err := os.Truncate(disk, 32<<20); err != nil {
		fmt.Println(err)
		return
	}

	oneTime, derived := make([]byte, 32), make([]byte, 32)
	rand.Read(oneTime)
	rand.Read(derived)

	if _, err := cryptsetup.Format(ctx, disk, oneTime, cryptsetup.FormatOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	d, err := cryptsetup.Open(disk, cryptsetup.FormatOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer d.Close()
	if err := d.Rekey(ctx, oneTime, derived, 1); err != nil {
		fmt.Println(err)
		return
	}
	st, err := d.ReadState()
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = d.CheckKey(oneTime)
	fmt.Println("keyed:", st.Keyed, "generation:", st.Generation)
	fmt.Println("one-time passphrase rejected:", errors.Is(err, cryptsetup.ErrKeyRejected))
	// Output:
	// keyed: true generation: 1
	// one-time passphrase rejected: true
}
