package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// The scripts ask reconfctl itself for completions: urfave/cli answers a
// command line that ends in --generate-bash-completion with the candidate
// commands and flags.

const bashCompletion = `# bash completion for reconfctl
# Load it with: source <(reconfctl completion bash)
_reconfctl_complete() {
  local cur words cword
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  words=("${words[@]:0:$cword}")
  local request
  if [[ "$cur" == "-"* ]]; then
    request="${words[*]} ${cur} --generate-bash-completion"
  else
    request="${words[*]} --generate-bash-completion"
  fi
  local opts
  opts=$(eval "${request}" 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -o nospace -F _reconfctl_complete reconfctl
`

const zshCompletion = `#compdef reconfctl
# zsh completion for reconfctl
# Load it with: source <(reconfctl completion zsh)
# or save it as _reconfctl in a directory of $fpath.
_reconfctl() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [ "$funcstack[1]" = "_reconfctl" ]; then
  _reconfctl "$@"
else
  compdef _reconfctl reconfctl
fi
`

func completionCommand(s *streams) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script",
		UsageText: "reconfctl completion bash|zsh",
		ArgsUsage: "bash|zsh",
		Description: `Prints a script that completes reconfctl's commands and flags.

Examples:
   source <(reconfctl completion bash)
   reconfctl completion zsh > "${fpath[1]}/_reconfctl"`,
		Action: func(c *cli.Context) error {
			if c.Args().Len() != 1 {
				return usageErr(c, "want exactly one shell: bash or zsh")
			}
			switch sh := c.Args().First(); sh {
			case "bash":
				fmt.Fprint(s.stdout, bashCompletion)
			case "zsh":
				fmt.Fprint(s.stdout, zshCompletion)
			default:
				return usageErr(c, "unsupported shell %q: want bash or zsh", sh)
			}
			return nil
		},
	}
}

const completeFlag = "--generate-bash-completion"

// prepareCompletion handles a completion request (args ending in
// --generate-bash-completion): it installs completers that know the word
// being completed (urfave's default reads os.Args, which is wrong in-process),
// and turns a bare "--" being completed into "-", since urfave disables
// completion after "--".
func prepareCompletion(app *cli.App, args []string) []string {
	if len(args) < 2 || args[len(args)-1] != completeFlag {
		return args
	}
	last := ""
	if len(args) > 2 {
		last = args[len(args)-2]
	}
	if last == "--" {
		args = append(append([]string{}, args[:len(args)-2]...), "-", completeFlag)
	}
	app.BashComplete = completer(app, nil, last)
	var walk func(cmds []*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.BashComplete = completer(app, c, last)
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	return args
}

// completer prints the candidates for the word last: flags when it starts
// with "-" (the command's own and the global ones), else subcommands.
func completer(app *cli.App, cmd *cli.Command, last string) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		w := c.App.Writer
		if strings.HasPrefix(last, "-") {
			flags := app.Flags
			if cmd != nil {
				flags = append(append([]cli.Flag{}, cmd.Flags...), app.Flags...)
			}
			seen := map[string]bool{}
			for _, f := range flags {
				if v, ok := f.(cli.VisibleFlag); ok && !v.IsVisible() {
					continue
				}
				for _, n := range f.Names() {
					word := "--" + n
					if len(n) == 1 {
						word = "-" + n
					}
					if !seen[word] && strings.HasPrefix(word, last) {
						seen[word] = true
						fmt.Fprintln(w, word)
					}
				}
			}
			return
		}
		subs := app.Commands
		if cmd != nil {
			subs = cmd.Subcommands
		}
		for _, s := range subs {
			if s.Hidden || s.Name == "help" {
				continue
			}
			fmt.Fprintln(w, s.Name)
		}
	}
}
