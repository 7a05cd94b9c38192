// Package instance lets several agent processes share one node: it tracks the
// live instances in a run directory (a hostPath in the manifests) and hands
// listening sockets from a running instance to a new one.
//
// Liveness: each instance holds an exclusive flock on its own file
// "<id>.lock" for as long as it runs. The kernel drops the lock when the
// process dies, however it dies, so a SIGKILLed instance never counts as
// live; its files are removed by the next instance that looks.
//
// Node decisions (set up, tear down) are serialised by a second flock on
// "node.lock", so two instances stopping at the same moment cannot both
// conclude that the other one will clean up.
package instance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	lockSuffix   = ".lock"
	sockSuffix   = ".sock"
	nodeLockName = "node.lock"
	// pollInterval is how often a bounded lock wait retries.
	pollInterval = 10 * time.Millisecond
)

// Registry is this process's entry in the run directory.
type Registry struct {
	dir  string
	id   string
	lock *os.File
	hand *handoverServer
}

// Register creates dir if needed and enters this process as a live instance.
func Register(dir string) (*Registry, error) {
	if dir == "" {
		return nil, errors.New("instance: empty run directory")
	}
	// Only root may open the lock files: a lock file that another user
	// can open, that user can lock, and no instance could start.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance: create run directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("instance: run directory: %w", err)
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	// Lock a temporary name first and rename it into place, so no other
	// instance can ever see an unlocked <id>.lock of a live process.
	tmp, err := os.CreateTemp(dir, ".new-*")
	if err != nil {
		return nil, fmt.Errorf("instance: create lock file: %w", err)
	}
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("instance: lock %s: %w", tmp.Name(), err)
	}
	final := filepath.Join(dir, id+lockSuffix)
	if err := os.Rename(tmp.Name(), final); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("instance: publish lock file: %w", err)
	}
	return &Registry{dir: dir, id: id, lock: tmp}, nil
}

// ID is this instance's name in the run directory.
func (r *Registry) ID() string { return r.id }

// Dir is the run directory.
func (r *Registry) Dir() string { return r.dir }

// Others returns the IDs of the other live instances. Files left by dead
// instances are removed on the way.
func (r *Registry) Others() ([]string, error) {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return nil, fmt.Errorf("instance: read run directory: %w", err)
	}
	var live []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, lockSuffix) || name == nodeLockName {
			continue
		}
		id := strings.TrimSuffix(name, lockSuffix)
		if id == r.id {
			continue
		}
		alive, err := r.probe(id)
		if err != nil {
			return nil, err
		}
		if alive {
			live = append(live, id)
		}
	}
	return live, nil
}

// probe reports whether instance id holds its lock; a dead instance's files
// are removed.
func (r *Registry) probe(id string) (bool, error) {
	path := filepath.Join(r.dir, id+lockSuffix)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("instance: open %s: %w", path, err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("instance: probe %s: %w", path, err)
	}
	// We got the lock: its owner is gone.
	os.Remove(path)
	os.Remove(filepath.Join(r.dir, id+sockSuffix))
	return false, nil
}

// WithNodeLock runs fn while holding the node lock, waiting for it at most
// until ctx is done.
func (r *Registry) WithNodeLock(ctx context.Context, fn func() error) error {
	f, err := lockFile(ctx, filepath.Join(r.dir, nodeLockName))
	if err != nil {
		return err
	}
	defer f.Close()
	return fn()
}

// Leave removes this instance from the registry. Under the node lock it
// checks whether another instance is live; if none is, teardown runs (still
// under the lock, so a starting instance sets the node up again after it).
// It reports whether this was the last instance. The handover listener is
// closed first: a departing instance hands nothing out.
func (r *Registry) Leave(ctx context.Context, teardown func() error) (last bool, err error) {
	r.StopHandover()
	err = r.WithNodeLock(ctx, func() error {
		others, err := r.Others()
		if err != nil {
			return err
		}
		last = len(others) == 0
		var tdErr error
		if last && teardown != nil {
			tdErr = teardown()
		}
		r.release()
		return tdErr
	})
	if err != nil {
		r.release()
	}
	return last, err
}

// Close releases this instance's lock and files without any teardown.
func (r *Registry) Close() error {
	r.StopHandover()
	r.release()
	return nil
}

func (r *Registry) release() {
	if r.lock == nil {
		return
	}
	os.Remove(filepath.Join(r.dir, r.id+lockSuffix))
	os.Remove(filepath.Join(r.dir, r.id+sockSuffix))
	r.lock.Close()
	r.lock = nil
}

// lockFile opens (creating) path and takes an exclusive flock on it,
// retrying until ctx is done.
func lockFile(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("instance: open %s: %w", path, err)
	}
	// A file an older version created world-readable becomes private.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("instance: chmod %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("instance: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("instance: waiting for %s: %w", path, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

func newID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("instance: random id: %w", err)
	}
	return fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b)), nil
}
