package main

// `up`: certificates, kubeconfigs, etcd, then the three Kubernetes components as child
// processes; ready once every component answers its health endpoint.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

type upOptions struct {
	dir                    string
	apiserverPort          int
	etcdPort               int
	controllerManagerPort  int
	schedulerPort          int
	nodeMonitorGracePeriod string
	notReadyToleration     string
	readyTimeout           time.Duration
	extraAPIServerArgs     multiFlag
	extraControllerArgs    multiFlag
	fresh                  bool
	audit                  bool
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

type child struct {
	name string
	cmd  *exec.Cmd
	// done is closed once the process has exited; err holds how.
	done chan struct{}
	err  error
}

func runUp(args []string) int {
	var o upOptions
	flags := flag.NewFlagSet("up", flag.ContinueOnError)
	flags.StringVar(&o.dir, "dir", "/tmp/ferrofluid-testbed", "state directory: pki/, etcd/, logs/, kubeconfigs")
	flags.IntVar(&o.apiserverPort, "apiserver-port", 6443, "kube-apiserver's secure port on 127.0.0.1")
	flags.IntVar(&o.etcdPort, "etcd-port", 2379, "etcd's client port on 127.0.0.1 (the peer port is the next one)")
	flags.IntVar(&o.controllerManagerPort, "controller-manager-port", 10257, "kube-controller-manager's health port")
	flags.IntVar(&o.schedulerPort, "scheduler-port", 10259, "kube-scheduler's health port")
	flags.StringVar(&o.nodeMonitorGracePeriod, "node-monitor-grace-period", "40s", "how long a node may miss heartbeats before it is NotReady")
	flags.StringVar(&o.notReadyToleration, "default-not-ready-toleration-seconds", "300", "tolerationSeconds the DefaultTolerationSeconds admission adds for not-ready and unreachable taints")
	flags.DurationVar(&o.readyTimeout, "ready-timeout", 90*time.Second, "give up when the control plane is not ready by then")
	flags.Var(&o.extraAPIServerArgs, "apiserver-arg", "an extra kube-apiserver flag (repeatable)")
	flags.Var(&o.extraControllerArgs, "controller-manager-arg", "an extra kube-controller-manager flag (repeatable)")
	flags.BoolVar(&o.fresh, "fresh", false, "start from an empty etcd")
	flags.BoolVar(&o.audit, "audit", false, "write an audit log of every request's metadata to logs/audit.log (for the benchmarks' request counts)")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if err := up(o); err != nil {
		fmt.Fprintf(os.Stderr, "up: %v\n", err)
		return 1
	}
	return 0
}

func up(o upOptions) error {
	started := time.Now()
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return err
	}
	pki, logs := filepath.Join(dir, "pki"), filepath.Join(dir, "logs")
	if o.fresh {
		if err := os.RemoveAll(filepath.Join(dir, "etcd")); err != nil {
			return err
		}
	}
	for _, d := range []string{pki, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(dir, "ready"))
	server := fmt.Sprintf("https://127.0.0.1:%d", o.apiserverPort)
	if err := os.WriteFile(filepath.Join(dir, "server"), []byte(server+"\n"), 0o644); err != nil {
		return err
	}
	if err := writePKI(pki, server, dir); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, err := startEtcd(dir, o.etcdPort)
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	// Children die with this process (Pdeathsig is per thread: keep the spawning thread).
	runtime.LockOSThread()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var children []*child
	defer func() { stopChildren(children) }()

	if o.audit {
		policy := filepath.Join(dir, "audit-policy.yaml")
		// Metadata of every request once it has its response: who, what, which code.
		text := "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n"
		if err := os.WriteFile(policy, []byte(text), 0o644); err != nil {
			return err
		}
		o.extraAPIServerArgs = append(o.extraAPIServerArgs,
			"--audit-policy-file="+policy,
			"--audit-log-path="+filepath.Join(logs, "audit.log"),
			"--audit-log-format=json",
			"--audit-log-maxsize=0",
			// Blocking (the default): the batch backend drops events when its buffer fills,
			// and the benchmarks count on every request being there.
			"--audit-log-mode=blocking")
	}
	apiserver, err := spawn(dir, "kube-apiserver", apiserverArgs(o, dir, pki))
	if err != nil {
		return err
	}
	children = append(children, apiserver)
	admin, err := adminClient(pki)
	if err != nil {
		return err
	}
	if err := waitHealthy(ctx, admin, server+"/readyz", o.readyTimeout, children); err != nil {
		return fmt.Errorf("kube-apiserver: %w (see %s)", err, filepath.Join(logs, "kube-apiserver.log"))
	}

	schedulerConfig := filepath.Join(dir, "scheduler-config.yaml")
	if err := os.WriteFile(schedulerConfig, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
`, filepath.Join(dir, "scheduler.kubeconfig"))), 0o644); err != nil {
		return err
	}
	controllerManager, err := spawn(dir, "kube-controller-manager", controllerManagerArgs(o, dir, pki))
	if err != nil {
		return err
	}
	children = append(children, controllerManager)
	kubeScheduler, err := spawn(dir, "kube-scheduler", []string{
		"--config=" + schedulerConfig,
		"--authentication-kubeconfig=" + filepath.Join(dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig=" + filepath.Join(dir, "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.schedulerPort),
	})
	if err != nil {
		return err
	}
	children = append(children, kubeScheduler)
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, c := range []struct {
		name string
		port int
	}{{"kube-controller-manager", o.controllerManagerPort}, {"kube-scheduler", o.schedulerPort}} {
		if err := waitHealthy(ctx, insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.port), o.readyTimeout, children); err != nil {
			return fmt.Errorf("%s: %w (see %s)", c.name, err, filepath.Join(logs, c.name+".log"))
		}
	}

	kubeconfig := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("control plane ready in %.1f s: export KUBECONFIG=%s\n", time.Since(started).Seconds(), kubeconfig)

	// Run until told to stop; a component that exits on its own ends the control plane.
	failed := make(chan error, len(children))
	for _, c := range children {
		go func(c *child) {
			<-c.done
			failed <- fmt.Errorf("%s exited: %v (see %s)", c.name, c.err, filepath.Join(logs, c.name+".log"))
		}(c)
	}
	select {
	case <-ctx.Done():
		_ = os.Remove(filepath.Join(dir, "ready"))
		return nil
	case err := <-failed:
		_ = os.Remove(filepath.Join(dir, "ready"))
		return err
	}
}

func writePKI(pki, server, dir string) error {
	ca, err := loadOrCreateCA(pki, "ca")
	if err != nil {
		return err
	}
	// The aggregation layer's front proxy has a CA of its own, as in kubeadm clusters.
	frontProxy, err := loadOrCreateCA(pki, "front-proxy-ca")
	if err != nil {
		return err
	}
	if err := frontProxy.issue(pki, "front-proxy-client", pkix.Name{CommonName: "front-proxy-client"}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	if err := serviceAccountKeys(pki); err != nil {
		return err
	}
	serving := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if err := ca.issue(pki, "apiserver", pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		serving, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}); err != nil {
		return err
	}
	if err := ca.issue(pki, "apiserver-kubelet-client", pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"kubeadm:cluster-admins"}}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	clients := []struct {
		name, user string
		orgs       []string
	}{
		{"admin", "kubernetes-admin", []string{"system:masters"}},
		{"controller-manager", "system:kube-controller-manager", nil},
		{"scheduler", "system:kube-scheduler", nil},
	}
	for _, c := range clients {
		if err := ca.issue(pki, c.name, pkix.Name{CommonName: c.user, Organization: c.orgs}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(dir, c.name+".kubeconfig"), server, filepath.Join(pki, "ca.crt"),
			filepath.Join(pki, c.name+".crt"), filepath.Join(pki, c.name+".key"), c.user); err != nil {
			return err
		}
	}
	return nil
}

func startEtcd(dir string, port int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "testbed"
	cfg.Dir = filepath.Join(dir, "etcd")
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port+1))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "logs", "etcd.log")}
	// A disposable test cluster: durability across power loss is not worth the fsyncs.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("not ready within 60 s")
	}
}

func apiserverArgs(o upOptions, dir, pki string) []string {
	p := func(name string) string { return filepath.Join(pki, name) }
	args := []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", o.etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.apiserverPort),
		"--tls-cert-file=" + p("apiserver.crt"),
		"--tls-private-key-file=" + p("apiserver.key"),
		"--client-ca-file=" + p("ca.crt"),
		"--kubelet-client-certificate=" + p("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + p("apiserver-kubelet-client.key"),
		"--requestheader-client-ca-file=" + p("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + p("front-proxy-client.crt"),
		"--proxy-client-key-file=" + p("front-proxy-client.key"),
		"--service-account-key-file=" + p("sa.pub"),
		"--service-account-signing-key-file=" + p("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range=10.0.0.0/24",
		// The endpoints of the `kubernetes` Service may not be loopback addresses.
		"--endpoint-reconciler-type=none",
		"--default-not-ready-toleration-seconds=" + o.notReadyToleration,
		"--default-unreachable-toleration-seconds=" + o.notReadyToleration,
		"--profiling=false",
	}
	return append(args, o.extraAPIServerArgs...)
}

func controllerManagerArgs(o upOptions, dir, pki string) []string {
	kubeconfig := filepath.Join(dir, "controller-manager.kubeconfig")
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(o.controllerManagerPort),
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa.key"),
		"--root-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--cluster-signing-cert-file=" + filepath.Join(pki, "ca.crt"),
		"--cluster-signing-key-file=" + filepath.Join(pki, "ca.key"),
		"--leader-elect=false",
		"--node-monitor-grace-period=" + o.nodeMonitorGracePeriod,
		"--node-monitor-period=2s",
		// Thousands of objects are created in the benchmarks; the defaults (20 qps) would
		// measure the controller-manager's client throttle instead.
		"--kube-api-qps=500",
		"--kube-api-burst=1000",
		"--concurrent-statefulset-syncs=20",
		"--concurrent-daemonset-syncs=20",
		"--profiling=false",
	}
	return append(args, o.extraControllerArgs...)
}

func spawn(dir, name string, args []string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "logs", name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	return c, nil
}

func stopChildren(children []*child) {
	for i := len(children) - 1; i >= 0; i-- {
		c := children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
}

func adminClient(pki string) (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
	}}, nil
}

// waitHealthy polls url until it answers 200, a child exits, or the timeout passes.
func waitHealthy(ctx context.Context, client *http.Client, url string, timeout time.Duration, children []*child) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		for _, c := range children {
			select {
			case <-c.done:
				return fmt.Errorf("%s exited: %v", c.name, c.err)
			default:
			}
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not healthy within %s (last: %s)", url, timeout, last)
}
