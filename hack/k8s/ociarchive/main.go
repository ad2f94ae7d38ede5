// Command ociarchive writes a single-layer container image as a
// docker-archive tarball, the format `ctr images import` reads, so that the
// node image can carry the control-plane images and import them into
// containerd without a registry.
//
//	ociarchive -o apiserver.tar -tag registry.k8s.io/kube-apiserver:v1.37.2 \
//	    /usr/local/bin/kube-apiserver=.cache/k8s/v1.37.2/kube-apiserver
//
// The output is reproducible: entries are sorted, owned by root and dated
// SOURCE_DATE_EPOCH (0 when unset); the image config has no creation time.
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociarchive:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ociarchive", flag.ContinueOnError)
	out := fs.String("o", "", "output tarball")
	tag := fs.String("tag", "", "image reference, e.g. registry.k8s.io/pause:3.10.2")
	entrypoint := fs.String("entrypoint", "", "entrypoint (space separated); empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *tag == "" || fs.NArg() == 0 {
		return errors.New("usage: ociarchive -o OUT -tag REF [-entrypoint CMD] /path/in/image=host/file ...")
	}
	epoch := int64(0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		epoch = v
	}
	mtime := time.Unix(epoch, 0).UTC()

	files := map[string]string{}
	for _, a := range fs.Args() {
		dst, src, ok := strings.Cut(a, "=")
		if !ok || !path.IsAbs(dst) || path.Clean(dst) != dst || src == "" {
			return fmt.Errorf("file %q: want /absolute/path/in/image=host/path", a)
		}
		files[dst] = src
	}
	layer, err := buildLayer(files, mtime)
	if err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer)
	layerID := hex.EncodeToString(layerSum[:])

	var ep []string
	if *entrypoint != "" {
		ep = strings.Fields(*entrypoint)
	}
	config, err := json.Marshal(imageConfig{
		Architecture: "amd64",
		OS:           "linux",
		Config: containerConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Entrypoint: ep,
		},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{"sha256:" + layerID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]manifestEntry{{
		Config:   configName,
		RepoTags: []string{*tag},
		Layers:   []string{layerID + "/layer.tar"},
	}})
	if err != nil {
		return err
	}

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{configName, config},
		{layerID + "/layer.tar", layer},
		{"manifest.json", manifest},
	} {
		if err := writeFile(tw, e.name, 0o644, e.data, mtime); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, *out)
}

// buildLayer puts each host file at its path in the image (mode 0755), with
// its parent directories and a world-writable /tmp.
func buildLayer(files map[string]string, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{"tmp": true}
	names := make([]string, 0, len(files))
	for dst := range files {
		names = append(names, dst)
		for d := path.Dir(dst); d != "/"; d = path.Dir(d) {
			dirs[strings.TrimPrefix(d, "/")] = true
		}
	}
	sort.Strings(names)
	dirNames := make([]string, 0, len(dirs))
	for d := range dirs {
		dirNames = append(dirNames, d)
	}
	sort.Strings(dirNames)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirNames {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, dst := range names {
		data, err := os.ReadFile(files[dst])
		if err != nil {
			return nil, fmt.Errorf("reading %s for %s: %w", files[dst], dst, err)
		}
		if err := writeFile(tw, strings.TrimPrefix(dst, "/"), 0o755, data, mtime); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte, mtime time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := io.Copy(tw, bytes.NewReader(data))
	return err
}

type (
	imageConfig struct {
		Architecture string          `json:"architecture"`
		OS           string          `json:"os"`
		Config       containerConfig `json:"config"`
		RootFS       rootFS          `json:"rootfs"`
	}
	containerConfig struct {
		Env        []string `json:"Env"`
		Entrypoint []string `json:"Entrypoint,omitempty"`
	}
	rootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}
	manifestEntry struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
)
