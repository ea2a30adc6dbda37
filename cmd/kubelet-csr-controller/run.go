package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

// flags are the process matters; policy lives in the configuration file.
type flags struct {
	kubeconfig              string
	configFile              string
	metricsAddr             string
	metricsSecure           bool
	metricsCertDir          string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	logFormat               string
	logLevel                string
	zapLevel                zapcore.Level // logLevel, parsed
	profiling               bool
	pprofAddr               string
	version                 bool
	deprecated              []string // warnings about deprecated flags used
}

func parseFlags(args []string, out io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("kubelet-csr-controller", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig. Default: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.")
	fs.StringVar(&f.configFile, "config", "", "Path to the configuration file (config.nodecsr.io/v1alpha1 ControllerConfig). Default: built-in defaults.")
	fs.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus /metrics endpoint; 0 disables it.")
	fs.BoolVar(&f.metricsSecure, "metrics-secure", true, "Serve /metrics over HTTPS to callers whose token the API server authenticates (TokenReview) and authorizes for get on the non-resource URL /metrics (SubjectAccessReview). false: plain HTTP, to anyone who can reach the address.")
	fs.StringVar(&f.metricsCertDir, "metrics-cert-dir", "", "Directory with tls.crt and tls.key for --metrics-secure (reloaded when they change). Default: a self-signed certificate made at start.")
	fs.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints; 0 disables them.")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "Elect a leader through a Lease so that only one replica acts.")
	fs.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease. Default: the pod's namespace (required outside a cluster).")
	fs.StringVar(&f.logFormat, "zap-encoder", "json", "Log encoding: json or console (controller-runtime's flag name).")
	fs.StringVar(&f.logLevel, "zap-log-level", "info", "Log level: error, info, debug, or a verbosity number (1 = debug) (controller-runtime's flag name).")
	for old, current := range deprecatedFlags {
		target := fs.Lookup(current)
		fs.Var(target.Value, old, "Deprecated: use --"+current+"; removed in the release after v0.2.0.")
	}
	fs.BoolVar(&f.profiling, "profiling", false, "Serve /debug/pprof on --pprof-bind-address.")
	fs.StringVar(&f.pprofAddr, "pprof-bind-address", "127.0.0.1:8082", "Address of /debug/pprof with --profiling. Loopback by default: profiles show memory, and a Service or hostNetwork would expose them; reach it with kubectl port-forward.")
	fs.BoolVar(&f.version, "version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, &usageError{msg: fmt.Sprintf("unexpected arguments %q; did you mean the check or audit subcommand?", fs.Args())}
	}
	if f.metricsCertDir != "" && !f.metricsSecure {
		return nil, &usageError{msg: "--metrics-cert-dir needs --metrics-secure"}
	}
	if f.logFormat != "json" && f.logFormat != "console" {
		return nil, &usageError{msg: fmt.Sprintf("--zap-encoder must be json or console, not %q", f.logFormat)}
	}
	lvl, err := zapLevel(f.logLevel)
	if err != nil {
		return nil, &usageError{msg: err.Error()}
	}
	f.zapLevel = lvl
	fs.Visit(func(fl *flag.Flag) {
		if current, ok := deprecatedFlags[fl.Name]; ok {
			f.deprecated = append(f.deprecated, fmt.Sprintf("--%s is deprecated: use --%s", fl.Name, current))
		}
	})
	return f, nil
}

// deprecatedFlags are the old names of flags renamed to a convention
// operators know (controller-runtime's zap flags), kept as aliases for one
// release: old name -> current name.
var deprecatedFlags = map[string]string{
	"log-format": "zap-encoder",
	"log-level":  "zap-log-level",
}

// run is the whole program; main only maps its error to an exit code.
func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "check" {
		return runCheck(ctx, args[1:], os.Stdout)
	}
	if len(args) > 0 && args[0] == "audit" {
		return runAudit(ctx, args[1:], os.Stdout, time.Now)
	}
	if len(args) > 0 && args[0] == "status" {
		return runStatus(ctx, args[1:], os.Stdout)
	}
	f, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if f.version {
		fmt.Println(versionString())
		return nil
	}
	logger := newLogger(f.logFormat, f.zapLevel, os.Stderr)
	installGlobalLogger(logger)
	for _, w := range f.deprecated {
		logger.Info("flag warning: " + w)
	}
	if err := applyMemoryLimit(logger, os.Getenv, debug.SetMemoryLimit); err != nil {
		return &usageError{msg: err.Error()}
	}

	// Configuration first: a bad file exits before anything touches the
	// cluster.
	cfg, warnings, err := config.Load(f.configFile)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		logger.Info("configuration warning: " + w)
	}
	if err := registerBuildInfo(metrics.Registry); err != nil {
		return err
	}
	mgr, err := newManager(ctx, f, cfg)
	if err != nil {
		return err
	}
	logger.Info("starting", "version", version, "config", f.configFile, "leaderElection", f.leaderElect)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager stopped: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// globalLogger guards the process-wide loggers of controller-runtime and
// klog: the first run installs them (tests call run several times in one
// process, and other goroutines read them without a lock).
var globalLogger sync.Once

func installGlobalLogger(logger logr.Logger) {
	globalLogger.Do(func() {
		ctrl.SetLogger(logger)
		klog.SetLogger(logger)
	})
}

// newLogger builds the zap logger behind logr: JSON by default, no stack
// traces below panics (an error message should be read, not scrolled).
func newLogger(format string, lvl zapcore.Level, out io.Writer) logr.Logger {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.AddSync(out), zap.NewAtomicLevelAt(lvl))
	return zapr.NewLogger(zap.New(core, zap.AddStacktrace(zapcore.PanicLevel)))
}

// zapLevel maps --zap-log-level to zap: logr's V(n) is zap level -n.
func zapLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "error":
		return zapcore.ErrorLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "debug":
		return zapcore.Level(-1), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 10 {
		return 0, fmt.Errorf("--zap-log-level must be error, info, debug or a number 0-10, not %q", s)
	}
	return zapcore.Level(-n), nil
}
