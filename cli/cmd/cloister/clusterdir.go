package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cloister-dev/cloister/internal/atomicfile"
	"github.com/cloister-dev/cloister/internal/keys"
)

// The files of a cluster directory. The directory is 0700 and every file in
// it 0600: the secrets derive every disk key of the cluster.
const (
	secretsFileName    = "cluster-secrets.json"
	kubeconfigFileName = "kubeconfig"
	clusterIDFileName  = "cluster-id"
)

// clusterDir is a local directory that holds one cluster's secrets, its
// admin kubeconfig and its cluster ID.
type clusterDir string

func (d clusterDir) path(name string) string { return filepath.Join(string(d), name) }

// reserve prepares d for a new cluster's secrets: it creates d (0700) if
// needed and claims the secrets file by creating it empty and exclusively,
// so that two inits cannot share a directory and existing secrets are never
// overwritten. saveSecrets then replaces the empty file atomically.
func (d clusterDir) reserve() error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fail(exitLocal, fmt.Errorf("creating cluster directory: %w", err))
	}
	fi, err := os.Stat(string(d))
	if err != nil {
		return fail(exitLocal, fmt.Errorf("checking cluster directory: %w", err))
	}
	if !fi.IsDir() {
		return failf(exitLocal, nil, "cluster directory %s is not a directory", d)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return failf(exitLocal, []string{fmt.Sprintf("chmod 700 %s", d)}, "cluster directory %s has mode %04o: group or others could read the secrets", d, perm)
	}
	f, err := os.OpenFile(d.path(secretsFileName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return d.taken()
	}
	if err != nil {
		return fail(exitLocal, fmt.Errorf("reserving the secrets file: %w", err))
	}
	if err := f.Close(); err != nil {
		return fail(exitLocal, fmt.Errorf("reserving the secrets file: %w", err))
	}
	return nil
}

// checkFree fails if d already holds secrets. reserve checks again,
// atomically.
func (d clusterDir) checkFree() error {
	_, err := os.Lstat(d.path(secretsFileName))
	switch {
	case err == nil:
		return d.taken()
	case errors.Is(err, fs.ErrNotExist):
		return nil
	}
	return fail(exitLocal, fmt.Errorf("checking cluster directory: %w", err))
}

func (d clusterDir) taken() error {
	return failf(exitLocal, []string{
		"every cluster needs its own directory: pass another --cluster-dir",
		"if that cluster is gone for good, and no node holds its secrets, remove " + string(d),
	}, "cluster directory %s already holds a cluster's secrets; refusing to overwrite them", d)
}

// saveSecrets writes the secrets (0600, atomically, synced).
func (d clusterDir) saveSecrets(s *keys.ClusterSecrets) error {
	if err := keys.WriteClusterSecrets(d.path(secretsFileName), s); err != nil {
		return fail(exitLocal, fmt.Errorf("saving cluster secrets: %w", err))
	}
	return nil
}

// secrets reads the secrets; a file that group or others can read is
// refused (keys.FileProvider).
func (d clusterDir) secrets(ctx context.Context) (*keys.ClusterSecrets, error) {
	s, err := keys.FileProvider{Path: d.path(secretsFileName)}.ClusterSecrets(ctx)
	if err != nil {
		var hints []string
		if errors.Is(err, fs.ErrNotExist) {
			hints = []string{"--cluster-dir must be the directory 'cloister init' wrote for this cluster"}
		}
		return nil, fail(exitLocal, fmt.Errorf("reading cluster secrets: %w", err), hints...)
	}
	return s, nil
}

// writeFile writes one file of the directory, 0600, atomically.
func (d clusterDir) writeFile(name string, data []byte) error {
	if err := atomicfile.Write(d.path(name), data, 0o600); err != nil {
		return fail(exitLocal, err)
	}
	return nil
}
