# sytest driver for Repeater: the factory, selected with `-I Repeater`.
#
# Written for this project against sytest's documented driver interface
# (SyTest::HomeserverFactory); see ../Homeserver/Repeater.pm for the server
# side and sytest/README.md in the repository for how to run it.

use strict;
use warnings;

require SyTest::Homeserver::Repeater;

package SyTest::HomeserverFactory::Repeater;
use base qw( SyTest::HomeserverFactory );

sub _init
{
   my $self = shift;

   $self->{args} = {
      binary => $ENV{REPEATER_BINARY},
   };
   $self->{impl_name} = "repeater";

   $self->SUPER::_init( @_ );
}

# Matched against tests' `implementation_specific => [...]` lists (which only
# name "synapse" and "dendrite"); tests whose list does not include it are not
# run at all. `--implementation-name dendrite` makes sytest also run the
# Dendrite-only tests (shared-secret registration, ...).
sub implementation_name
{
   my $self = shift;
   return ref $self ? $self->{impl_name} : "repeater";
}

sub get_options
{
   my $self = shift;

   return (
      'hs-binary=s'           => \$self->{args}{binary},
      'implementation-name=s' => \$self->{impl_name},
      $self->SUPER::get_options(),
   );
}

sub print_usage
{
   print STDERR <<'USAGE';
       --hs-binary PATH             - path to the repeater binary
                                      (default: $REPEATER_BINARY)
       --implementation-name NAME   - name matched against tests'
                                      implementation_specific lists
                                      (default: repeater)
USAGE
}

sub create_server
{
   my $self = shift;
   my %params = ( @_, %{ $self->{args} } );

   defined $params{binary} and length $params{binary} or
      die "Repeater needs --hs-binary PATH (or \$REPEATER_BINARY)\n";
   -f $params{binary} and -x _ or
      die "Repeater binary '$params{binary}' is not an executable file\n";

   return SyTest::Homeserver::Repeater->new( %params );
}

1;
