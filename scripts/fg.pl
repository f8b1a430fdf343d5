#!/usr/bin/perl
# fg.pl COMMAND...: runs COMMAND in a process group of its own that owns the terminal, and
# exits with its status. `make run` uses it so that Ctrl-C reaches the proxy and its script,
# which stop cleanly and exit 0, and not make, which would die of the signal (status 130)
# whatever the script did. Without a terminal, or when not in the foreground, it just runs
# COMMAND.
use strict;
use warnings;
use POSIX qw(setpgid tcsetpgrp tcgetpgrp getpgrp WIFEXITED WEXITSTATUS WIFSIGNALED WTERMSIG);

my $tty;
if (!open($tty, '+<', '/dev/tty') || tcgetpgrp(fileno($tty)) != getpgrp()) {
    exec { $ARGV[0] } @ARGV or die "fg.pl: $ARGV[0]: $!\n";
}
my $fd = fileno($tty);
my $ours = getpgrp();
my $pid = fork();
die "fg.pl: fork: $!\n" unless defined $pid;
if ($pid == 0) {
    setpgid(0, 0);
    local $SIG{TTOU} = 'IGNORE';
    tcsetpgrp($fd, getpgrp());
    close($tty);
    exec { $ARGV[0] } @ARGV or die "fg.pl: $ARGV[0]: $!\n";
}
setpgid($pid, $pid);    # whichever of the two runs first
$SIG{INT} = $SIG{QUIT} = 'IGNORE';
waitpid($pid, 0);
my $st = $?;
{
    local $SIG{TTOU} = 'IGNORE';
    tcsetpgrp($fd, $ours);  # the terminal back to make
}
exit(WIFEXITED($st) ? WEXITSTATUS($st) : 128 + WTERMSIG($st));
