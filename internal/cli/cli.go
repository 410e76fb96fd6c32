// Package cli is the one flag and environment scheme of the project's
// binaries: every flag also has an environment variable, named from the
// binary's prefix and the flag's name (-max-ttl of the daemon is
// RENDEZVOUS_MAX_TTL, -data-dir of the chat is CHAT_DATA_DIR), so that a
// container can be configured without a command line. A flag given on the
// command line wins over its variable, which wins over the default.
package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// FlagSet is a flag.FlagSet whose flags each have an environment variable:
// define flags with the embedded methods (String, Int, Var, …).
type FlagSet struct {
	*flag.FlagSet
	prefix string
}

// New returns a FlagSet that reports errors instead of exiting and writes
// usage and errors to output. Environment variables are prefix followed by
// the flag name in upper case with '-' as '_'.
func New(name, prefix string, output io.Writer) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	return &FlagSet{FlagSet: fs, prefix: prefix}
}

// Env is the environment variable of the flag name.
func (f *FlagSet) Env(name string) string {
	return f.prefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args, then sets each flag not given in args from its
// environment variable, looked up with lookup (os.LookupEnv outside tests).
// A variable that lookup reports as set, even to "", counts; a binary that
// wants empty to mean unset passes a lookup that says so (see NonEmpty).
// Positional arguments are refused.
func (f *FlagSet) Parse(args []string, lookup func(string) (string, bool)) error {
	if err := f.FlagSet.Parse(args); err != nil {
		return err
	}
	if f.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", f.Arg(0))
	}
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		if set[fl.Name] || err != nil {
			return
		}
		env := f.Env(fl.Name)
		v, ok := lookup(env)
		if !ok {
			return
		}
		if e := f.Set(fl.Name, v); e != nil {
			err = fmt.Errorf("invalid value %q for %s: %w", v, env, e)
		}
	})
	return err
}

// NonEmpty turns a getenv-style function into a lookup for Parse under which
// a variable set to "" counts as unset.
func NonEmpty(getenv func(string) string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	}
}

// PrintDefaults writes every flag with its environment variable and default:
//
//	-name type	[PREFIX_NAME]
//	    	usage (default value)
func (f *FlagSet) PrintDefaults() {
	w := f.Output()
	f.VisitAll(func(fl *flag.Flag) {
		name, usage := flag.UnquoteUsage(fl)
		if name != "" {
			name = " " + name
		}
		fmt.Fprintf(w, "  -%s%s\t[%s]\n    \t%s", fl.Name, name, f.Env(fl.Name), usage)
		if fl.DefValue != "" && fl.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", fl.DefValue)
		}
		fmt.Fprintln(w)
	})
}
