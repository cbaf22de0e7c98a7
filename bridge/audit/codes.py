"""The coded values of the audit messages (DICOM PS3.15 A.5, PS3.16 CID 400-406,
RFC 3881 for the participant object ID types it kept), as (code, system, meaning)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    system: str  # codeSystemName
    meaning: str  # originalText (the DICOM Code Meaning)


def dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


def ihe(transaction: str, meaning: str) -> Code:
    return Code(transaction, "IHE Transactions", meaning)


# EventID (CID 403)
APPLICATION_ACTIVITY = dcm("110100", "Application Activity")
EXPORT = dcm("110106", "Export")
ORDER_RECORD = dcm("110109", "Order Record")
PATIENT_RECORD = dcm("110110", "Patient Record")
PROCEDURE_RECORD = dcm("110111", "Procedure Record")
QUERY = dcm("110112", "Query")
SECURITY_ALERT = dcm("110113", "Security Alert")
USER_AUTHENTICATION = dcm("110114", "User Authentication")

# EventTypeCode (CID 404)
APPLICATION_START = dcm("110120", "Application Start")
APPLICATION_STOP = dcm("110121", "Application Stop")
LOGIN = dcm("110122", "Login")
LOGOUT = dcm("110123", "Logout")
NODE_AUTHENTICATION = dcm("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = dcm("110131", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = dcm("110132", "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = dcm("110133", "Audit Recording Stopped")

# The IHE Radiology transactions the daemon takes part in (EventTypeCode).
RAD_4 = ihe("RAD-4", "Procedure Scheduled")
RAD_5 = ihe("RAD-5", "Query Modality Worklist")
RAD_6 = ihe("RAD-6", "Modality Procedure Step In Progress")
RAD_7 = ihe("RAD-7", "Modality Procedure Step Completed")
RAD_12 = ihe("RAD-12", "Patient Update")
RAD_13 = ihe("RAD-13", "Procedure Update")
RAD_49 = ihe("RAD-49", "Instance Availability Notification")

# RoleIDCode (CID 402)
APPLICATION = dcm("110150", "Application")
APPLICATION_LAUNCHER = dcm("110151", "Application Launcher")
DESTINATION = dcm("110152", "Destination Role ID")
SOURCE = dcm("110153", "Source Role ID")

# ParticipantObjectIDTypeCode
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
SOP_CLASS_UID = dcm("110181", "SOP Class UID")
STUDY_INSTANCE_UID = dcm("110180", "Study Instance UID")
NODE_ID = dcm("110182", "Node ID")
ACCESSION_NUMBER = Code("ACSN", "HL7", "Accession Number")
USER_IDENTIFIER = Code("11", "RFC-3881", "User Identifier")
URI = Code("12", "RFC-3881", "URI")

# The Modality Worklist Information Model - FIND SOP Class (PS3.4 K.6).
MWL_FIND = "1.2.840.10008.5.1.4.31"
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
# What the PACS reconciliation asks (Study Root Q/R - FIND, PS3.4 C.6.2).
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
