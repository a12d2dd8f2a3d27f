"""Command line of the coursework kit: ``list``, ``make NAME --out DIR``, ``grade DIR``."""
import argparse
import sys

from .. import coursework
from .assignments import ASSIGNMENTS, get_assignment
from .grader import grade, report_markdown, write_gradescope, write_report
from .handout import HandoutError, make_handout


def _positive(kind, what):
    """argparse type: a number of ``kind`` above 0."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value > 0 or value != value:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return convert


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minigrad.coursework", description=coursework.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the assignments and their graded items")
    make = sub.add_parser("make", help="write the student package of one assignment")
    make.add_argument("name", choices=list(ASSIGNMENTS), help=f"the assignment: {', '.join(ASSIGNMENTS)}")
    make.add_argument("--out", required=True, help="a new (or empty) folder for the handout")
    g = sub.add_parser("grade", help="grade a submission folder (a completed handout)")
    g.add_argument("dir", help="the submission: a folder holding minigrad/")
    g.add_argument("--assignment", help="the assignment (default: read from DIR/COURSEWORK.json); 'all' grades "
                                        "every item, e.g. on a copy of the library to check the kit against it")
    g.add_argument("--json", help="write Gradescope's results.json here")
    g.add_argument("--report", help="write the Markdown report here (default: print it)")
    g.add_argument("--seed", type=_seed, help="seed of the hidden cases (default: drawn now, and reported)")
    g.add_argument("--timeout", type=_positive(float, "a positive number of seconds"), default=60.0,
                   help="wall-clock seconds per item (default 60)")
    g.add_argument("--memory-gb", type=_positive(float, "a positive number of GB"), default=4.0,
                   help="address-space limit per item (default 4)")
    g.add_argument("--jobs", type=_positive(int, "a positive whole number"), default=2,
                   help="items graded at once (default 2)")
    g.add_argument("--jit", action="store_true", help="compile the submission's Numba kernels (slow start)")
    return parser


def main(argv=None):
    """The kit's command line; user errors (bad flags, unwritable folders) end in one line, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except OSError as error:  # a folder or file that cannot be written or read
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write or read{where}: {error.strerror or error}", file=sys.stderr)
        return 2


def _run(args):
    if args.command == "list":
        for assignment in ASSIGNMENTS.values():
            print(f"{assignment.name}: {assignment.title} ({assignment.max_score} points)")
            for item in assignment.items:
                print(f"    {item.name:28s} {item.points:3d} points   {', '.join(item.files())}")
        return 0
    if args.command == "make":
        try:
            out = make_handout(get_assignment(args.name), args.out)
        except (ValueError, HandoutError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"handout '{args.name}' written to {out} (instructions in {out / 'HANDOUT.md'}; the same with a "
              f"check per item in {out / (args.name + '.ipynb')})")
        return 0
    try:
        result = grade(args.dir, assignment=args.assignment, seed=args.seed, timeout=args.timeout,
                       memory_bytes=int(args.memory_gb * (1 << 30)), jobs=args.jobs, jit=args.jit)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.report:
        write_report(result, args.report)
    else:
        print(report_markdown(result))
    if args.json:
        write_gradescope(result, args.json)
    where = (f" (report: {args.report})" if args.report else "") + (f" (Gradescope JSON: {args.json})" if args.json else "")
    print(f"{result.assignment}: {result.score:g} / {result.max_score:g}{where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
