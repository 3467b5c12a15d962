// Command ferrofluid-controlplane runs a real Kubernetes control plane on 127.0.0.1 for
// ferrofluid's testbed: embedded etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler, all of one Kubernetes release, from one binary.
//
// `up` generates the PKI and kubeconfigs, embeds etcd in its own process and starts each
// Kubernetes component as a child process of the same binary (`ferrofluid-controlplane
// kube-apiserver ...`), so that the components' process-wide state (signal handlers,
// metrics registries, flags) stays apart as in a real cluster.
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: ferrofluid-controlplane COMMAND [flags]

commands:
  up          generate certificates, start etcd, kube-apiserver, kube-controller-manager
              and kube-scheduler on 127.0.0.1, write kubeconfigs, wait until ready
  kubeconfig  write a kubeconfig with a client certificate for a user (and groups)
  kube-apiserver | kube-controller-manager | kube-scheduler
              run that component in the foreground (used by up)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	command, args := os.Args[1], os.Args[2:]
	switch command {
	case "up":
		os.Exit(runUp(args))
	case "kubeconfig":
		os.Exit(runKubeconfig(args))
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-scheduler":
		cmd := scheduler.NewSchedulerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "ferrofluid-controlplane: unknown command %q\n%s", command, usage)
		os.Exit(2)
	}
}
