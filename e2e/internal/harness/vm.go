package harness

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// NodeConfig describes a node: what it boots and how it is configured. The
// zero value of every optional field is the plain choice (no firmware, no
// TPM, no disks, no forwards).
type NodeConfig struct {
	// Name names the node's directory and log lines.
	Name string
	// Kernel and Initrd are booted with -kernel and -initrd.
	Kernel, Initrd string
	// Cmdline is appended to "console=ttyS0 panic=-1".
	Cmdline string
	// RootDisk, if set, is the first virtio disk (/dev/vda), attached with
	// snapshot=on: the image file is never written, and every boot starts
	// from the same root.
	RootDisk string
	// RootFiles are written into a private copy of RootDisk before the
	// first boot (absolute path → content), as an operator bakes them into
	// their image. The node image's root is verity-protected: changing it
	// fails the boot; hand its nodes files with FwCfgFiles instead.
	RootFiles map[string][]byte
	// FwCfgFiles are QEMU fw_cfg items opt/cloister/<name> (name → host
	// file): the node image's test hook copies node.yaml,
	// join-service-policy.yaml, policy.yaml, bootstrapper.yaml and
	// tpm-ek-roots.pem into /etc/cloister before the daemons start.
	FwCfgFiles map[string]string
	// StateDiskMiB, if positive, creates a blank state disk of that size
	// (see NewStateDisk), attached after the root disk and kept across the
	// node's reboots.
	StateDiskMiB int64
	// OEMStrings are SMBIOS type-11 strings (cloister.join=10.0.2.2:PORT).
	OEMStrings []string
	// Forwards lists guest TCP ports reachable from the host on
	// 127.0.0.1:<HostPort(guest port)>.
	Forwards []int
	// TPMCA, if set, gives the node a vTPM whose EK certificates it signs.
	TPMCA *TPMCA
	// OVMF boots through UEFI firmware, which measures the boot into the
	// vTPM; without it SeaBIOS boots the kernel directly (nothing measured).
	OVMF bool
	// FirmwareCode and FirmwareVars (with OVMF) replace Debian's 4 MiB
	// OVMF build without Secure Boot, the firmware the image's reference
	// values are for.
	FirmwareCode, FirmwareVars string
	// ESP (with OVMF) is a boot disk NewESP made: the firmware boots its
	// unified kernel image like a real UEFI machine, instead of QEMU's
	// -kernel; Kernel, Initrd and Cmdline are then unused. Nodes that share
	// an ESP have the same boot measurements. It is the last disk.
	ESP string
	// MemoryMiB defaults to 1024; CPUs to 1.
	MemoryMiB, CPUs int
	// Timeout bounds every boot of the node; default 10 minutes.
	Timeout time.Duration
}

// Node is a machine that may boot several times: its vTPM state, OVMF
// variables, state disk and host ports persist across boots.
type Node struct {
	Config NodeConfig
	// Dir holds the node's files and one directory per boot.
	Dir string
	// TPM is nil without Config.TPMCA.
	TPM *TPM
	// Firmware is nil without Config.OVMF.
	Firmware *Firmware
	// StateDisk is the raw state disk image, "" without one.
	StateDisk string

	ports map[int]int
	boots int
}

// NewNode prepares a node's persistent parts in a temporary directory.
func NewNode(t TB, cfg NodeConfig) *Node {
	t.Helper()
	RequireTool(t, "qemu-system-x86_64")
	if cfg.Name == "" || strings.ContainsAny(cfg.Name, "/ ") {
		t.Fatalf("harness: NodeConfig.Name %q: want a non-empty name without / or spaces", cfg.Name)
	}
	if cfg.ESP == "" && (cfg.Kernel == "" || cfg.Initrd == "") {
		t.Fatal("harness: NodeConfig.Kernel and Initrd are required without ESP")
	}
	if cfg.ESP != "" && !cfg.OVMF {
		t.Fatal("harness: NodeConfig.ESP needs OVMF")
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 1024
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	dir, err := filepath.Abs(filepath.Join(t.TempDir(), cfg.Name))
	if err != nil {
		t.Fatal(err)
	}
	mkdirAll(t, dir)
	n := &Node{Config: cfg, Dir: dir, ports: map[int]int{}}
	if cfg.TPMCA != nil {
		n.TPM = NewTPM(t, cfg.TPMCA, dir)
	}
	if cfg.OVMF {
		n.Firmware = NewFirmware(t, dir, cfg.FirmwareCode, cfg.FirmwareVars)
	}
	if len(cfg.RootFiles) > 0 {
		if cfg.RootDisk == "" {
			t.Fatal("harness: NodeConfig.RootFiles needs RootDisk")
		}
		n.Config.RootDisk = customRoot(t, dir, cfg.RootDisk, cfg.RootFiles)
		cfg = n.Config
	}
	if cfg.StateDiskMiB > 0 {
		n.StateDisk = NewStateDisk(t, dir, cfg.StateDiskMiB)
	}
	for _, gp := range cfg.Forwards {
		n.ports[gp] = freePort(t)
	}
	return n
}

// HostPort is the port on 127.0.0.1 that reaches guest port guest.
func (n *Node) HostPort(guest int) int {
	hp, ok := n.ports[guest]
	if !ok {
		panic(fmt.Sprintf("harness: internal error: guest port %d is not in NodeConfig.Forwards", guest))
	}
	return hp
}

// Addr is "127.0.0.1:<HostPort(guest)>".
func (n *Node) Addr(guest int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.HostPort(guest)))
}

// VM is one boot of a node.
type VM struct {
	// Console is the serial console.
	Console *Console
	// Started is when QEMU was started.
	Started time.Time

	node    *Node
	qemu    *process
	stopTPM func()
	offset  int
}

// Boot starts the node under QEMU (TCG, -no-reboot: a reboot ends the VM;
// boot again to continue). t.Cleanup stops it.
func (n *Node) Boot(t TB) *VM {
	t.Helper()
	qemu := RequireTool(t, "qemu-system-x86_64")
	n.boots++
	run := filepath.Join(n.Dir, fmt.Sprintf("boot-%d", n.boots))
	mkdirAll(t, run)
	cfg := n.Config

	args := []string{
		"-machine", "q35", "-accel", "tcg",
		"-m", strconv.Itoa(cfg.MemoryMiB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + filepath.Join(run, "serial.log"),
	}
	if cfg.ESP == "" {
		args = append(args, "-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", kernelCmdline(cfg))
	}
	netdev := "user,id=n0"
	for _, gp := range cfg.Forwards {
		// 127.0.0.1 only: nothing outside this machine reaches the guest.
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:%d", n.ports[gp], gp)
	}
	// romfile= drops iPXE: the firmware never tries a network boot.
	args = append(args, "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile=")
	if cfg.RootDisk != "" {
		args = append(args, "-drive", "file="+qemuEscape(cfg.RootDisk)+",if=virtio,format=raw,snapshot=on")
	}
	if n.StateDisk != "" {
		args = append(args, "-drive", "file="+qemuEscape(n.StateDisk)+",if=virtio,format=raw,cache=unsafe")
	}
	if cfg.ESP != "" {
		args = append(args,
			"-drive", "if=none,id=esp,format=raw,snapshot=on,file="+qemuEscape(cfg.ESP),
			"-device", "virtio-blk-pci,drive=esp,bootindex=0")
	}
	for _, s := range cfg.OEMStrings {
		args = append(args, "-smbios", "type=11,value="+qemuEscape(s))
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.FwCfgFiles)) {
		args = append(args, "-fw_cfg", "name=opt/cloister/"+qemuEscape(name)+",file="+qemuEscape(cfg.FwCfgFiles[name]))
	}
	if n.Firmware != nil {
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemuEscape(n.Firmware.Code),
			"-drive", "if=pflash,format=raw,unit=1,file="+qemuEscape(n.Firmware.Vars))
	}
	vm := &VM{node: n, stopTPM: func() {}}
	if n.TPM != nil {
		sock, stop := n.TPM.start(t, run, cfg.Timeout+time.Minute)
		vm.stopTPM = stop
		args = append(args,
			"-chardev", "socket,id=chrtpm,path="+qemuEscape(sock),
			"-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
			"-device", "tpm-crb,tpmdev=tpm0")
	}
	if err := os.WriteFile(filepath.Join(run, "qemu.args"), []byte(strings.Join(args, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("writing qemu.args: %v", err)
	}
	vm.Started = time.Now()
	vm.qemu = startProcess(t, filepath.Join(run, "qemu.out"), cfg.Timeout, qemu, args...)
	vm.Console = &Console{path: filepath.Join(run, "serial.log"), exited: vm.qemu.exited}
	// Cleanups run last-in first-out: QEMU (registered later) stops before
	// swtpm.
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			t.Logf("%s boot %d: serial log %s; tail:\n%s", n.Config.Name, n.boots, vm.Console.Path(), vm.tail(3000))
		}
	})
	return vm
}

// Stop ends QEMU and swtpm by their PIDs and waits for them.
func (vm *VM) Stop() {
	vm.qemu.stop()
	vm.stopTPM()
}

// Exited is closed when QEMU has ended (power-off, reboot, crash, timeout).
func (vm *VM) Exited() <-chan struct{} { return vm.qemu.done }

// Expect waits up to d for re on the serial console, after the previous
// Expect's match, and returns its submatches. It logs how long after the
// start of QEMU the marker came, and fails t with the log's tail otherwise.
func (vm *VM) Expect(t TB, re *regexp.Regexp, d time.Duration) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, end, err := vm.Console.Wait(ctx, re, vm.offset)
	if err != nil {
		t.Fatalf("%s: %v after %s; serial log %s ends:\n%s", vm.node.Config.Name, err, time.Since(vm.Started).Round(100*time.Millisecond), vm.Console.Path(), vm.tail(3000))
	}
	vm.offset = end
	t.Logf("%s: %q after %s", vm.node.Config.Name, m[0], time.Since(vm.Started).Round(100*time.Millisecond))
	return m
}

// WaitExit waits up to d for QEMU to end (the guest powered off or
// rebooted) and fails t otherwise.
func (vm *VM) WaitExit(t TB, d time.Duration) {
	t.Helper()
	select {
	case <-vm.Exited():
	case <-time.After(d):
		t.Fatalf("%s: VM still running after %s; serial log ends:\n%s", vm.node.Config.Name, d, vm.tail(2000))
	}
}

func (vm *VM) tail(n int) string {
	text, err := vm.Console.Text()
	if err != nil {
		return fmt.Sprintf("(reading serial log: %v)", err)
	}
	if len(text) > n {
		text = "…" + text[len(text)-n:]
	}
	return text
}

func kernelCmdline(cfg NodeConfig) string { return KernelCmdline(cfg.Cmdline) }

// KernelCmdline is extra appended to what every node needs (serial
// console, no reboot on panic).
func KernelCmdline(extra string) string {
	return strings.TrimSpace("console=ttyS0 panic=-1 " + extra)
}

// qemuEscape doubles commas, QEMU's option separator, in a value.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// freePort picks a free TCP port on 127.0.0.1.
func freePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("picking a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
