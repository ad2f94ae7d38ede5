package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cloister-dev/cloister/e2e/internal/scenario"
)

func run(e *env) error {
	fmt.Fprintln(e.out, "Cloister demo: a control plane and a worker as confidential-style VMs")
	fmt.Fprintln(e.out, "(QEMU TCG, OVMF measured boot, swtpm vTPM, LUKS2/dm-crypt state disks, vanilla Kubernetes v1.37.2).")
	fmt.Fprintf(e.out, "Under TCG on 2 cores this takes about 8 minutes. Details: %s\n\n", e.logsDir)

	c := scenario.New(e, scenario.Options{Kubernetes: true, Progress: e.step})
	endpoint := "10.0.2.2:" + strconv.Itoa(c.ControlPlane.HostPort(scenario.KubeAPIPort))

	e.step("booting the control plane cp-1")
	cpVM := scenario.BootUntilWaiting(e, c.ControlPlane)
	e.step("cp-1: fresh state disk encrypted (LUKS2, dm-crypt), bootstrapper waits for init (%s after power-on)", since(cpVM.Started))
	e.step("cloister init: attest cp-1 (TPM quote, policy), send the cluster secrets, kubeadm init")
	clusterID := c.Init(e, cpVM, endpoint)
	e.step("cluster %s initialized; kubeconfig in %s", clusterID[:16]+"…", c.ClusterDir)
	kube := c.Kube(e)
	scenario.WaitNode(e, kube, "cp-1", 10*time.Minute, scenario.Ready)
	e.step("cp-1 is a Ready Node (%s after power-on)", since(cpVM.Started))

	e.step("booting worker-1: it attests to cp-1's join service by itself")
	worker := c.NewWorker(e, "worker-1", c.ControlPlane.HostPort(scenario.JoinServicePort))
	wVM := worker.Boot(e)
	wVM.Console.FailOn = scenario.BootFailures
	wVM.Expect(e, scenario.DiskFormatted, 5*time.Minute)
	e.step("worker-1: state disk encrypted; joining (attested TLS both ways, disk key, bootstrap token, kubelet certificate)")
	wVM.Expect(e, scenario.Joined, 20*time.Minute)
	n := scenario.WaitNode(e, kube, "worker-1", 10*time.Minute, scenario.Ready)
	e.step("worker-1 joined: a Ready Node (%s after power-on)", since(wVM.Started))

	e.step("power-cycling worker-1: its disk key comes back from the join service, no operator involved")
	wVM.Stop()
	wVM = worker.Boot(e)
	wVM.Console.FailOn = scenario.BootFailures
	wVM.Expect(e, scenario.KeyedDiskWaits, 5*time.Minute)
	m := wVM.Expect(e, scenario.LatchExtended, 5*time.Minute)
	if m[1] != clusterID {
		e.Fatalf("worker-1 extended its latch with %s, want the cluster ID %s", m[1], clusterID)
	}
	wVM.Expect(e, scenario.RejoinReady, 2*time.Minute)
	e.step("worker-1: state disk unlocked with the released key; cluster-ID latch (PCR 15) extended")
	again := scenario.WaitNode(e, kube, "worker-1", 10*time.Minute, scenario.RebootedReady(n))
	if again.UID != n.UID {
		e.Fatalf("worker-1 came back as a new Node (uid %s, was %s)", again.UID, n.UID)
	}
	e.step("worker-1 is the same Node, Ready again (%s after power-on, new boot ID)", since(wVM.Started))
	wVM.Expect(e, scenario.StatusServing, 2*time.Minute)

	e.step("cloister verify worker-1: the running node attests again (measurements, cluster-ID latch)")
	out, stderr, code := scenario.CLIExit(e, c.CLI, 3*time.Minute, append([]string{"verify", "--node", worker.Addr(scenario.AttestedPort), "--policy", c.Policy, "--cluster-dir", c.ClusterDir}, c.Roots...)...)
	if code != 0 {
		e.Fatalf("cloister verify of worker-1: exit %d\n%s%s", code, out, stderr)
	}
	// The CLI's summary lines; the measurements (every PCR, all as the
	// policy predicts) stay in its full output.
	summary, _, _ := strings.Cut(strings.TrimSpace(out), "measurements:")
	for _, line := range strings.Split(strings.TrimSpace(summary), "\n") {
		fmt.Fprintf(e.out, "         %s\n", line)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	fmt.Fprintf(e.out, "\nSummary\n  cluster ID   %s\n  kubeconfig   removed with the demo's files (the API server stops with the VMs)\n  nodes\n", clusterID)
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "    NAME\tSTATUS\tKUBELET\tAGE")
	for _, n := range nodes.Items {
		status := "NotReady"
		if scenario.Ready(&n) {
			status = "Ready"
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\n", n.Name, status, n.Status.NodeInfo.KubeletVersion, since(n.CreationTimestamp.Time))
	}
	tw.Flush()
	fmt.Fprintf(e.out, "  logs         %s (serial consoles of every boot, demo.log)\n  total        %s\n", e.logsDir, since(e.start))
	return nil
}

func since(t time.Time) string { return time.Since(t).Round(time.Second).String() }
