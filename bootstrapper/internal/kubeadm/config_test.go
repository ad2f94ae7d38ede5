package kubeadm

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const hash = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func goodJoin() Join {
	return Join{NodeName: "worker-1", APIServerEndpoint: "10.0.0.1:6443", Token: "abcdef.0123456789abcdef", CACertHashes: []string{hash}}
}

func goodInit() Init {
	return Init{NodeName: "cp-1", ClusterName: "demo", KubernetesVersion: "v1.37.2", CertificateKey: strings.Repeat("ab", 32)}
}

// validate runs the REAL kubeadm's `config validate` on doc.
func validate(t *testing.T, doc []byte) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	return Runner{Path: realKubeadm(t)}.Validate(context.Background(), path)
}

func TestGeneratedConfigsPassRealKubeadmValidate(t *testing.T) {
	cp := goodJoin()
	cp.CertificateKey = strings.Repeat("0f", 32)
	ep := goodInit()
	ep.ControlPlaneEndpoint = "cp.example.com:6443"
	cases := []struct {
		name string
		gen  func() ([]byte, error)
	}{
		{"worker join", func() ([]byte, error) { return JoinConfiguration(goodJoin()) }},
		{"control-plane join", func() ([]byte, error) { return JoinConfiguration(cp) }},
		{"init", func() ([]byte, error) { return InitConfiguration(goodInit()) }},
		{"init with control-plane endpoint", func() ([]byte, error) { return InitConfiguration(ep) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := tc.gen()
			if err != nil {
				t.Fatal(err)
			}
			if err := validate(t, doc); err != nil {
				t.Fatalf("kubeadm config validate: %v\n%s", err, doc)
			}
		})
	}
}

// TestRealKubeadmRejectsBrokenConfig shows the validation test can fail: a
// document with a broken token is refused by kubeadm itself.
func TestRealKubeadmRejectsBrokenConfig(t *testing.T) {
	doc, err := JoinConfiguration(goodJoin())
	if err != nil {
		t.Fatal(err)
	}
	broken := []byte(strings.ReplaceAll(string(doc), "abcdef.0123456789abcdef", "abcdef.XYZ"))
	if err := validate(t, broken); err == nil {
		t.Fatal("kubeadm accepted a broken token")
	}
}

func TestJoinConfigurationContent(t *testing.T) {
	doc, err := JoinConfiguration(goodJoin())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"apiVersion: kubeadm.k8s.io/v1beta4", "kind: JoinConfiguration", "apiServerEndpoint: 10.0.0.1:6443", "- " + hash, "name: worker-1", "token: abcdef.0123456789abcdef"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("missing %q in\n%s", want, doc)
		}
	}
	if strings.Contains(string(doc), "controlPlane") {
		t.Errorf("worker join has a controlPlane section:\n%s", doc)
	}
}

func TestInvalidInputsRefused(t *testing.T) {
	joins := map[string]func(*Join){
		"token format":          func(j *Join) { j.Token = "abc.def" },
		"uppercase token":       func(j *Join) { j.Token = "ABCDEF.0123456789abcdef" },
		"no CA hash":            func(j *Join) { j.CACertHashes = nil },
		"CA hash without alg":   func(j *Join) { j.CACertHashes = []string{strings.TrimPrefix(hash, "sha256:")} },
		"CA hash short":         func(j *Join) { j.CACertHashes = []string{hash[:70]} },
		"endpoint without port": func(j *Join) { j.APIServerEndpoint = "10.0.0.1" },
		"endpoint port 0":       func(j *Join) { j.APIServerEndpoint = "10.0.0.1:0" },
		"endpoint port +1":      func(j *Join) { j.APIServerEndpoint = "10.0.0.1:+1" },
		"node name":             func(j *Join) { j.NodeName = "Bad_Name" },
		"certificate key":       func(j *Join) { j.CertificateKey = "xyz" },
		"yaml injection":        func(j *Join) { j.NodeName = "a\nkind: InitConfiguration" },
	}
	for name, mut := range joins {
		t.Run("join/"+name, func(t *testing.T) {
			j := goodJoin()
			mut(&j)
			if doc, err := JoinConfiguration(j); err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
		})
	}
	inits := map[string]func(*Init){
		"version":         func(i *Init) { i.KubernetesVersion = "1.37" },
		"certificate key": func(i *Init) { i.CertificateKey = strings.Repeat("AB", 32) },
		"cluster name":    func(i *Init) { i.ClusterName = "Demo Cluster" },
		"endpoint":        func(i *Init) { i.ControlPlaneEndpoint = "x" },
	}
	for name, mut := range inits {
		t.Run("init/"+name, func(t *testing.T) {
			i := goodInit()
			mut(&i)
			if doc, err := InitConfiguration(i); err == nil {
				t.Fatalf("accepted:\n%s", doc)
			}
		})
	}
}

func TestRunnerErrorHidesOutput(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "kubeadm")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'token abcdef.0123456789abcdef'\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	err := Runner{Path: script, Output: &out}.Join(context.Background(), "/nonexistent")
	if err == nil || strings.Contains(err.Error(), "abcdef") || !strings.Contains(err.Error(), "exit code 3") {
		t.Fatalf("err = %v: want the exit code and no output", err)
	}
	if !strings.Contains(out.String(), "abcdef.0123456789abcdef") {
		t.Fatalf("output not captured: %q", out.String())
	}
}

func TestRunnerErrorNamesKubeadmsErrorRedacted(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "kubeadm")
	body := "#!/bin/sh\n" +
		"echo '[preflight] Running pre-flight checks'\n" +
		"echo 'error execution phase preflight: [ERROR Mem]: the system RAM (950 MB) is less than the minimum 1700 MB' >&2\n" +
		"echo 'kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:" + strings.Repeat("ab", 32) + " error' >&2\n" +
		"exit 1\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Runner{Path: script}.Init(context.Background(), "/nonexistent")
	if err == nil {
		t.Fatal("want an error")
	}
	msg := err.Error()
	if strings.Contains(msg, "abcdef.0123456789abcdef") || strings.Contains(msg, strings.Repeat("ab", 32)) {
		t.Fatalf("error leaks a secret: %v", err)
	}
	if !strings.Contains(msg, "--token REDACTED") || !strings.Contains(msg, "exit code 1") {
		t.Fatalf("error = %v: want the last error line, redacted", err)
	}
	// Without a secret on the last error line, the line is kept as it is.
	body = "#!/bin/sh\necho 'error execution phase preflight: [ERROR Mem]: the system RAM (950 MB) is less than the minimum 1700 MB' >&2\n" +
		"echo 'To see the stack trace of this error execute with --v=5 or higher' >&2\nexit 1\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	err = Runner{Path: script}.Init(context.Background(), "/nonexistent")
	if err == nil || !strings.Contains(err.Error(), "[ERROR Mem]: the system RAM (950 MB) is less than the minimum 1700 MB") {
		t.Fatalf("error = %v: want kubeadm's error line", err)
	}
}

func TestKubeletKubeconfigLoadsWithClientGo(t *testing.T) {
	b, err := KubeletKubeconfig("worker-1", "10.0.2.2:6443", "/etc/kubernetes/pki/ca.crt", "/var/lib/kubelet/pki/kubelet-client-current.pem")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(b)
	if err != nil {
		t.Fatalf("client-go cannot load the kubelet kubeconfig: %v\n%s", err, b)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		t.Fatalf("no current context in\n%s", b)
	}
	cl, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
	if cl == nil || user == nil {
		t.Fatalf("context %+v names a missing cluster or user in\n%s", ctx, b)
	}
	if cl.Server != "https://10.0.2.2:6443" || cl.CertificateAuthority != "/etc/kubernetes/pki/ca.crt" || cl.InsecureSkipTLSVerify {
		t.Errorf("cluster: got server %q, CA %q, insecure %v", cl.Server, cl.CertificateAuthority, cl.InsecureSkipTLSVerify)
	}
	if ctx.AuthInfo != "system:node:worker-1" || user.ClientCertificate != "/var/lib/kubelet/pki/kubelet-client-current.pem" || user.ClientKey != user.ClientCertificate || user.Token != "" {
		t.Errorf("user %q: cert %q key %q token set %v", ctx.AuthInfo, user.ClientCertificate, user.ClientKey, user.Token != "")
	}
}

func TestKubeletKubeconfigRefusesBadInputs(t *testing.T) {
	for name, args := range map[string][4]string{
		"node name":     {"Worker_1", "10.0.2.2:6443", "/ca.crt", "/cert.pem"},
		"endpoint":      {"worker-1", "10.0.2.2", "/ca.crt", "/cert.pem"},
		"relative CA":   {"worker-1", "10.0.2.2:6443", "ca.crt", "/cert.pem"},
		"relative cert": {"worker-1", "10.0.2.2:6443", "/ca.crt", "cert.pem"},
	} {
		if _, err := KubeletKubeconfig(args[0], args[1], args[2], args[3]); err == nil || !strings.Contains(err.Error(), strings.Fields(name)[len(strings.Fields(name))-1]) {
			t.Errorf("%s: got %v, want an error naming it", name, err)
		}
	}
}

func TestJoinConfigurationIgnoresOnlyThePlacedKubeletConf(t *testing.T) {
	b, err := JoinConfiguration(Join{NodeName: "worker-1", APIServerEndpoint: "10.0.2.2:6443", Token: "abcdef.0123456789abcdef", CACertHashes: []string{"sha256:" + strings.Repeat("ab", 32)}})
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		NodeRegistration struct {
			IgnorePreflightErrors []string `json:"ignorePreflightErrors"`
		} `json:"nodeRegistration"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if got := doc.NodeRegistration.IgnorePreflightErrors; len(got) != 1 || got[0] != PreflightKubeletConf {
		t.Errorf("ignorePreflightErrors = %q, want exactly [%s]", got, PreflightKubeletConf)
	}
}
