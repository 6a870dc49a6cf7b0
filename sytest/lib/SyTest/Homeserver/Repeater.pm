# sytest driver for Repeater: one homeserver process.
#
# Written for this project against sytest's documented homeserver interface
# (SyTest::Homeserver, SyTest::Homeserver::ProcessManager).
#
# Each server gets two ports from sytest's port range, in this order:
#   tls   - HTTPS, client + federation APIs. The server_name is
#           localhost:<tls>, because sytest federates with host:port directly.
#   plain - plain HTTP, client + federation APIs: the client base URL sytest
#           uses (public_baseurl).
# Ports are allocated when sytest creates a server, usually server-0 first
# (8800 tls / 8801 plain, then 8802 / 8803 with the default range).
#
# start():
#   repeater generate-config --dir HS_DIR --server-name localhost:<tls>
#       --listen localhost:<plain> --tls-listen localhost:<tls> --test-network
#       --registration-shared-secret reg_secret [--app-service-config FILE ...]
#   repeater --config HS_DIR/repeater.yaml
# It is ready when both ports accept TCP connections. The server's output
# (stdout and stderr) is copied to HS_DIR/repeater.log; sytest also prints its
# last 20 lines if the process exits. sytest stops it with SIGINT (SIGKILL
# 30 s later).

use strict;
use warnings;

use Future;

package SyTest::Homeserver::Repeater;
use base qw( SyTest::Homeserver );

use Carp;

use constant REGISTRATION_SHARED_SECRET => "reg_secret";

sub _init
{
   my $self = shift;
   my ( $args ) = @_;

   $self->{binary} = delete $args->{binary};
   defined $self->{binary} or croak "Need a binary";

   $self->SUPER::_init( $args );

   my $idx = $self->{hs_index};
   $self->{ports} = {
      tls   => main::alloc_port( "repeater[$idx].tls" ),
      plain => main::alloc_port( "repeater[$idx].plain" ),
   };
}

sub server_name
{
   my $self = shift;
   return $self->{bind_host} . ":" . $self->secure_port;
}

sub federation_host
{
   my $self = shift;
   return $self->{bind_host};
}

sub federation_port
{
   my $self = shift;
   return $self->secure_port;
}

sub secure_port
{
   my $self = shift;
   return $self->{ports}{tls};
}

sub unsecure_port
{
   my $self = shift;
   return $self->{ports}{plain};
}

sub public_baseurl
{
   my $self = shift;
   return "http://$self->{bind_host}:" . $self->unsecure_port;
}

sub config_path
{
   my $self = shift;
   return "$self->{hs_dir}/repeater.yaml";
}

# The child's environment. sytest's process helpers replace the whole
# environment with what they are given, so start from ours (PATH, HOME,
# TMPDIR, ...).
sub _child_env
{
   my $self = shift;
   return {
      %ENV,
      REPEATER_SYTEST => 1,
   };
}

sub start
{
   my $self = shift;

   return $self->_generate_config->then(
      $self->_capture_weakself( '_start_repeater' )
   );
}

sub _generate_config
{
   my $self = shift;

   my $bind_host = $self->{bind_host};

   my @command = (
      $self->{binary}, 'generate-config',
      '--dir',         $self->{hs_dir},
      '--server-name', $self->server_name,
      '--listen',      "$bind_host:" . $self->unsecure_port,
      '--tls-listen',  "$bind_host:" . $self->secure_port,
      '--test-network',
      '--registration-shared-secret', REGISTRATION_SHARED_SECRET,
      map { ( '--app-service-config', $_ ) } @{ $self->{app_service_config_files} // [] },
   );

   $self->{output}->diag( "Generating Repeater config: @command" );

   return $self->_run_command(
      command => \@command,
      setup   => [ env => $self->_child_env ],
   )->then( sub {
      -f $self->config_path or
         return Future->fail( "repeater generate-config did not write " . $self->config_path );
      Future->done;
   });
}

sub _start_repeater
{
   my $self = shift;

   my $output = $self->{output};
   my $idx    = $self->{hs_index};

   my @command = ( $self->{binary}, '--config', $self->config_path );

   $output->diag( "Starting Repeater: @command" );

   my $logfile = "$self->{hs_dir}/repeater.log";
   if( open my $fh, ">>", $logfile ) {
      $fh->autoflush( 1 );
      $self->{logfh} = $fh;
   }
   else {
      warn "cannot write $logfile: $!\n";
   }

   return $self->_start_process_and_await_connectable(
      setup        => [ env => $self->_child_env ],
      command      => \@command,
      connect_host => $self->{bind_host},
      connect_port => $self->secure_port,
      name         => "repeater-$idx",
   )->then( sub {
      $self->await_connectable( $self->{bind_host}, $self->unsecure_port );
   })->else( sub {
      die "Unable to start repeater-$idx: $_[0]\n";
   })->on_done( sub {
      $output->diag( sprintf "Started repeater-%d (https %s:%d, http %s:%d)",
         $idx, $self->{bind_host}, $self->secure_port,
         $self->{bind_host}, $self->unsecure_port );
   });
}

# Copy every line of the server's output to HS_DIR/repeater.log, then let
# ProcessManager keep the last lines for its exit report.
sub _on_output_line
{
   my $self = shift;
   my ( $proc_info, $line ) = @_;

   if( my $fh = $self->{logfh} ) {
      print $fh "$line\n";
   }

   return $self->SUPER::_on_output_line( @_ );
}

1;
