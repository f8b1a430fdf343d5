# Install-time part of `make install` (see CMakeLists.txt): what holds installed paths, and
# the configuration in /etc. Runs inside cmake_install.cmake, where CMAKE_INSTALL_PREFIX is
# the prefix of this install and file(INSTALL) puts $DESTDIR in front of absolute paths.
#   PREFIX /usr: /etc/lockproxy, /usr/lib/systemd/system, /etc/logrotate.d
#   PREFIX P:    P/etc/lockproxy, P/lib/systemd/system, P/etc/logrotate.d
# The audit log of the installed configuration is /var/log/lockproxy/audit.log whatever the
# prefix: the unit's LogsDirectory= makes /var/log/lockproxy.
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(etc "/etc")
else()
  set(etc "${prefix}/etc")
endif()
if(IS_ABSOLUTE "${LP_SBINDIR}")
  set(sbin "${LP_SBINDIR}")
else()
  set(sbin "${prefix}/${LP_SBINDIR}")
endif()
set(gen "${LP_BINARY_DIR}/install-gen")

file(READ "${LP_SOURCE_DIR}/conf/lockproxy.service" unit)
string(REPLACE "/usr/sbin/lockproxy" "${sbin}/lockproxy" unit "${unit}")
string(REPLACE "/etc/lockproxy/" "${etc}/lockproxy/" unit "${unit}")
file(WRITE "${gen}/lockproxy.service" "${unit}")
file(INSTALL "${gen}/lockproxy.service" "${LP_SOURCE_DIR}/conf/lockproxy.socket"
     DESTINATION "${prefix}/lib/systemd/system")
file(INSTALL "${LP_SOURCE_DIR}/conf/lockproxy.logrotate" DESTINATION "${etc}/logrotate.d"
     RENAME lockproxy)

file(READ "${LP_SOURCE_DIR}/conf/lockproxy.conf" conf)
string(REPLACE "\nlog -\n" "\nlog /var/log/lockproxy/audit.log\n" conf "${conf}")
file(WRITE "${gen}/lockproxy.conf" "${conf}")
foreach(f "${gen}/lockproxy.conf" "${LP_SOURCE_DIR}/conf/policy.conf")
  get_filename_component(name "${f}" NAME)
  if(EXISTS "$ENV{DESTDIR}${etc}/lockproxy/${name}")
    message(STATUS "Kept: $ENV{DESTDIR}${etc}/lockproxy/${name} (already there)")
  else()
    file(INSTALL "${f}" DESTINATION "${etc}/lockproxy")
  endif()
endforeach()
